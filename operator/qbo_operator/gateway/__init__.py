"""The gateway (`qbo-operator gateway`): Connect pages, OAuth callback and Intuit webhook receiver."""
