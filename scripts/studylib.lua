-- scripts/studylib.lua: helpers of the study scripts (rex.lua, gyro.lua).
--
-- Points of a sweep that earlier runs of the same study already finished:
--   local studylib = require "studylib"   (wb puts the script's folder on package.path)
--   local r = studylib.plan(experiment, points, { keys = fn(p) -> {key, ...}, value = fn(p, key),
--                        done = metric that a finished point has logged })
--   r.todo    the points still to run, in order       r.reused   how many were found
--   r.run_ids run id per point (found ones filled in) r.fill(result) adds study:sweep(r.todo)'s runs
--
-- A point counts as done when some FINISHED child run of `experiment` in this database logged
-- `done` and its params hold, for every key of keys(p), the value value(p, key) (numbers compared
-- as numbers, anything else as text). So parts of a study run side by side, or its points run
-- under another selection of models or methods, are not trained twice, as long as every option
-- that decides a point's result is among its keys.
local wb = require "wb"

local M = {}

local function same(a, stored)
  if stored == nil then return false end
  if type(a) == "number" then return tonumber(stored) == a end
  return tostring(a) == stored
end

function M.plan(experiment, points, o)
  local earlier = {}
  for _, r in ipairs(wb.store.runs { experiment = experiment, status = "FINISHED" }) do
    if r.parent_id then
      local d = wb.store.run(r.id)
      if d and d.metrics[o.done] then earlier[#earlier + 1] = d end
    end
  end
  local plan = { todo = {}, run_ids = {}, reused = 0 }
  local index = {}
  for i, p in ipairs(points) do
    local keys = o.keys(p)
    for _, d in ipairs(earlier) do
      local ok = true
      for _, k in ipairs(keys) do
        if not same(o.value(p, k), d.params[k]) then
          ok = false
          break
        end
      end
      if ok then
        plan.run_ids[i] = d.id
        break
      end
    end
    if plan.run_ids[i] then
      plan.reused = plan.reused + 1
    else
      plan.todo[#plan.todo + 1] = p
      index[#plan.todo] = i
    end
  end
  function plan.fill(result)
    for j, id in ipairs(result.runs) do plan.run_ids[index[j]] = id end
  end
  return plan
end

-- "N from study run P (`command`, commit C); ..." for the reused points among run_ids (those whose
-- parent is not study_id), or nil when there are none.
function M.sources(run_ids, study_id)
  local parents, order = {}, {}
  for _, id in pairs(run_ids) do
    local r = wb.store.run(id)
    local pid = r and r.parent_id
    if pid and pid ~= study_id then
      if not parents[pid] then
        local pr = wb.store.run(pid) or {}
        parents[pid] = { n = 0, command = pr.tags and pr.tags["wb.command"] or "?", commit = pr.git_commit or "?" }
        order[#order + 1] = pid
      end
      parents[pid].n = parents[pid].n + 1
    end
  end
  if #order == 0 then return nil end
  table.sort(order)
  local parts = {}
  for _, pid in ipairs(order) do
    local q = parents[pid]
    parts[#parts + 1] = string.format("%d from study run %d (`%s`, commit %s)", q.n, pid, q.command, q.commit:sub(1, 10))
  end
  return table.concat(parts, "; ")
end

-- Writes a CSV file: head = {"col", ...}, rows = {{v, ...}, ...}; numbers with full precision,
-- text quoted when it holds a comma, a quote or a newline; nil as an empty cell.
function M.write_csv(path, head, rows)
  local function cell(v)
    if v == nil then return "" end
    if type(v) == "number" then
      if v ~= v then return "nan" end
      return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
    end
    v = tostring(v)
    if v:find('[,"\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
    return v
  end
  local f = assert(io.open(path, "w"))
  local function line(t)
    local c = {}
    for i = 1, #head do c[i] = cell(t[i]) end
    f:write(table.concat(c, ","), "\n")
  end
  line(head)
  for _, r in ipairs(rows) do line(r) end
  f:close()
end

return M
