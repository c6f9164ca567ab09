-- Argo CD health check for weft's mesh.weft.dev kinds (TrafficSplit,
-- RetryPolicy, BackendTrafficPolicy, RateLimitPolicy, AuthPolicy and
-- MeshConfig use the same script).
--
-- Healthy:     Programmed=True, observed for the current generation: every
--              proxy that needs this object's configuration has accepted it.
-- Degraded:    for the current generation, Accepted=False (the object is
--              invalid or conflicts with another), ResolvedRefs=False (it
--              names something that does not exist), or Programmed=False
--              with reason ProxyRejected (a proxy refused the configuration).
--              The message is the condition's message.
-- Progressing: anything else: no status yet, a status about an older
--              generation, or proxies still catching up.
--
-- Uses only Lua's base library: Argo CD runs custom health scripts without
-- the string library unless useOpenLibs is set.
local hs = {}

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type ~= nil then
      conditions[c.type] = c
    end
  end
end

-- A condition counts only when it describes the spec as it is now.
local function current(c)
  return c ~= nil and generation ~= nil and c.observedGeneration == generation
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  local text = c.type .. "=" .. tostring(c.status)
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. " (" .. c.reason .. ")"
  end
  return text
end

for _, t in ipairs({ "Accepted", "ResolvedRefs" }) do
  local c = conditions[t]
  if current(c) and c.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

local programmed = conditions["Programmed"]
if current(programmed) then
  if programmed.status == "True" then
    hs.status = "Healthy"
    hs.message = describe(programmed)
    return hs
  end
  if programmed.status == "False" and programmed.reason == "ProxyRejected" then
    hs.status = "Degraded"
    hs.message = describe(programmed)
    return hs
  end
  hs.status = "Progressing"
  hs.message = describe(programmed)
  return hs
end

hs.status = "Progressing"
if programmed == nil then
  hs.message = "Waiting for the weft controller to report status"
else
  hs.message = "Waiting for the weft controller to observe generation " .. tostring(generation)
end
return hs
