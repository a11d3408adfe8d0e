-- Argo CD health of a QuickbooksIntegration (integrations.greencheckverified.com), read from the
-- status the operator writes. Argo CD gives `obj`; the script returns {status, message}.
--   Progressing  the operator has not yet reconciled this generation, or says Reconciling=True
--   Degraded     phase Error (fix the spec or the operator's configuration), Disconnected (someone must
--                click Connect again), or the last sync failed
--   Suspended    phase Pending (waiting for a person at the company to connect; a pipeline must not wait
--                on that) or spec.suspend
--   Healthy      Ready=True
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.conditions == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the integration."
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation) .. "."
  return hs
end

local conditions = status.conditions
local ready = condition(conditions, "Ready")
local stalled = condition(conditions, "Stalled")
local reconciling = condition(conditions, "Reconciling")
local suspended = condition(conditions, "Suspended")
local connected = condition(conditions, "Connected")
local phase = status.phase

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "The spec or the operator's configuration is invalid.")
  return hs
end
if phase == "Error" then
  hs.status = "Degraded"
  hs.message = message_of(ready, "The spec or the operator's configuration is invalid.")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "The operator is reconciling the integration.")
  return hs
end
if phase == "Disconnected" then
  hs.status = "Degraded"
  hs.message = message_of(connected, message_of(ready, "Disconnected from QuickBooks: connect again."))
  return hs
end
if phase == "Pending" then
  hs.status = "Suspended"
  hs.message = message_of(connected, message_of(ready, "Waiting for a person at the company to connect."))
  return hs
end
if (obj.spec ~= nil and obj.spec.suspend == true) or (suspended ~= nil and suspended.status == "True") then
  hs.status = "Suspended"
  hs.message = message_of(suspended, "Scheduled syncs are suspended by spec.suspend.")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Connected.")
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = message_of(ready, "The integration is not ready.")
  return hs
end
hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the operator to reconcile the integration.")
return hs
