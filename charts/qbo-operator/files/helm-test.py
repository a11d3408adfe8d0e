"""`helm test`: the operator and the gateway answer their health endpoints, and the API server serves the
QuickbooksIntegration resource. Standard library only: it runs in the operator's image with `python3 -c`.
Every check runs and prints one line; the exit status is 1 when any failed."""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def get(url, headers=None, context=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=float(os.environ.get("TIMEOUT", "10")), context=context) as response:
        return response.status, response.read()


def check_http(name, url):
    try:
        status, _ = get(url)
    except urllib.error.HTTPError as exc:
        return f"{name}: {url} answered {exc.code}"
    except OSError as exc:
        return f"{name}: {url} did not answer: {exc}"
    return None if status == 200 else f"{name}: {url} answered {status}"


def check_crd():
    api = os.environ.get("KUBERNETES_API", "https://kubernetes.default.svc")
    path = os.environ["CRD_API_PATH"]
    plural = os.environ["CRD_PLURAL"]
    with open(os.environ.get("TOKEN_FILE", f"{SA}/token")) as f:
        token = f.read().strip()
    context = ssl.create_default_context(cafile=os.environ.get("CA_FILE", f"{SA}/ca.crt"))
    try:
        _, body = get(f"{api}{path}", {"Authorization": f"Bearer {token}"}, context)
    except urllib.error.HTTPError as exc:
        return f"CRD: {api}{path} answered {exc.code}: is the QuickbooksIntegration CRD installed?"
    except OSError as exc:
        return f"CRD: the API server {api} did not answer: {exc}"
    served = [r.get("name") for r in json.loads(body).get("resources", [])]
    return None if plural in served else f"CRD: {path} serves {served}, not {plural}"


def main():
    checks = [
        ("operator /healthz", lambda: check_http("operator /healthz", os.environ["OPERATOR_HEALTHZ"])),
        ("gateway /healthz", lambda: check_http("gateway /healthz", os.environ["GATEWAY_HEALTHZ"])),
        ("gateway /readyz", lambda: check_http("gateway /readyz", os.environ["GATEWAY_READYZ"])),
        ("CRD", check_crd),
    ]
    failed = 0
    for name, check in checks:
        problem = check()
        print(f"FAIL {problem}" if problem else f"ok   {name}", flush=True)
        failed += problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
