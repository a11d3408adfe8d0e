-- Argo CD resource actions of a QuickbooksIntegration. "sync-now" asks the operator for one sync at
-- once; it is offered only where the operator would run it (connected, not suspended), since elsewhere
-- the operator refuses it with a Warning Event.
local actions = {}
local connected = obj.status ~= nil and obj.status.phase == "Connected"
local suspended = obj.spec ~= nil and obj.spec.suspend == true
actions["sync-now"] = {["disabled"] = (not connected) or suspended}
return actions
