-- "Sync now": set integrations.greencheckverified.com/sync-requested-at to the current time. The
-- operator starts one sync Job for each new value and echoes it in status.lastHandledSyncRequest.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["integrations.greencheckverified.com/sync-requested-at"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
