-- bench/tests/lua/test_run.lua: the run side of the Lua API against the result store:
-- wb.args (defaults, overrides, type conversion, unknown names), run lifecycle (finish, <close>,
-- errors), logging (NaN/inf kept), tags, artifacts, recorded system info, wb.grid order, sweeps
-- (a failing point, resume, per-point seeds) and wb.progress.
-- Run as `wb run test_run.lua --db PATH`; the database may hold runs of earlier invocations, so
-- experiment names carry a nonce.
local wb = require "wb"

local passed, failed = 0, 0
local function check(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write("FAIL ", name, ": ", tostring(err), "\n")
  end
end
local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end
local function truthy(v, what)
  if not v then error((what or "condition") .. " is false", 2) end
end
-- Runs fn, expects an error whose message contains every one of the given plain substrings.
local function raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error", 2) end
  err = tostring(err)
  for _, s in ipairs { ... } do
    if not err:find(s, 1, true) then error(string.format("error %q lacks %q", err, s), 2) end
  end
  return err
end

local nonce = string.format("%.0f%04d", wb.time() * 1000, math.random(0, 9999))
local function exp_name(base) return "test_run/" .. base .. "/" .. nonce end

-- ---------------------------------------------------------------- wb.args

check("args defaults", function()
  local o = wb.args({ lr = 0.05, epochs = 2, model = "mlp", verbose = false }, { argv = {} })
  eq(o.lr, 0.05, "lr"); eq(o.epochs, 2, "epochs"); eq(math.type(o.epochs), "integer", "epochs type")
  eq(o.model, "mlp", "model"); eq(o.verbose, false, "verbose")
end)

check("args overrides and types", function()
  local o = wb.args({ lr = 0.05, epochs = 2, model = "mlp", verbose = false, batch_size = 128 },
    { argv = { "--lr", "0.1", "--epochs=5", "--verbose", "--model", "cnn", "--batch-size", "1e3" } })
  eq(o.lr, 0.1, "lr"); eq(o.epochs, 5, "epochs"); eq(math.type(o.epochs), "integer", "epochs type")
  eq(o.verbose, true, "verbose"); eq(o.model, "cnn", "model"); eq(o.batch_size, 1000, "batch_size")
  local o2 = wb.args({ verbose = true, lr = 1.0 }, { argv = { "--verbose", "off", "--lr", "-2.5" } })
  eq(o2.verbose, false, "verbose off"); eq(o2.lr, -2.5, "negative number value")
end)

check("args bad values name the option and the type", function()
  raises(function() wb.args({ epochs = 2 }, { argv = { "--epochs", "2.5" } }) end, "--epochs", "integer", "2.5")
  raises(function() wb.args({ lr = 0.1 }, { argv = { "--lr", "fast" } }) end, "--lr", "number", "fast")
  raises(function() wb.args({ verbose = false }, { argv = { "--verbose", "maybe" } }) end, "--verbose", "boolean")
  raises(function() wb.args({ model = "mlp" }, { argv = { "--model" } }) end, "--model", "needs a value")
end)

check("args unknown option lists the known ones", function()
  raises(function() wb.args({ lr = 0.1, epochs = 1 }, { argv = { "--lrr", "1" } }) end,
    "unknown option --lrr", "--epochs, --lr")
end)

check("args undeclared field and bad declarations", function()
  local o = wb.args({ lr = 0.1 }, { argv = {} })
  raises(function() return o.lrr end, "lrr", "--lr")
  raises(function() wb.args({ lr = {} }, { argv = {} }) end, "default of lr")
  raises(function() wb.args({ lr = 1 }, { argz = {} }) end, "unknown field 'argz'")
end)

-- ---------------------------------------------------------------- run lifecycle

check("experiment lifecycle and recorded info", function()
  local name = exp_name("life")
  local run = wb.experiment { name = name, params = { width = 64, act = "relu", seed = 7 } }
  local id = run:id()
  truthy(math.type(id) == "integer" and id > 0, "id")
  eq(run:status(), "RUNNING", "status")
  local r = wb.store.run(id)
  eq(r.status, "RUNNING", "stored status")
  eq(r.experiment, name, "experiment")
  eq(r.params.width, "64", "param width"); eq(r.params.act, "relu", "param act")
  eq(r.params.seed, "7", "param seed"); eq(r.seed, 7, "seed column")
  eq(r.params.lr, "0.1", "wb.args options land in params")
  eq(r.device, "cpu", "device"); eq(r.name, "test_run", "run name = script stem")
  truthy(r.script:find("test_run.lua", 1, true), "script path")
  truthy(#r.script_sha256 == 64 and r.script_sha256:match("^[0-9a-f]+$"), "sha256")
  truthy(r.threads and r.threads >= 1, "threads"); truthy(r.wb_version and #r.wb_version > 0, "version")
  truthy(r.host and #r.host > 0, "host")
  run:finish()
  eq(run:status(), "FINISHED", "status after finish")
  r = wb.store.run(id)
  eq(r.status, "FINISHED", "stored status after finish")
  truthy(r.wall_s >= 0 and r.peak_rss_kb > 0, "wall time and peak memory")
  raises(function() run:finish() end, "has ended")
  raises(function() run:log(1, { x = 1 }) end, "has ended")
end)

check("experiment without seed records the generator's", function()
  wb.manual_seed(1234)
  local run = wb.experiment { name = exp_name("seedless"), params = {} }
  local r = wb.store.run(run:id())
  eq(r.seed, 1234, "seed column"); eq(r.params.seed, "1234", "seed param")
  run:finish("FAILED", "given up")
  r = wb.store.run(run:id())
  eq(r.status, "FAILED", "status"); eq(r.error, "given up", "error")
  raises(function() wb.experiment { name = "x", param = {} } end, "unknown field 'param'", "params")
  raises(function() wb.experiment { name = "x", params = { bad = {} } } end, "bad")
end)

check("<close> ends FINISHED or FAILED with the error", function()
  local id
  do
    local run <close> = wb.experiment { name = exp_name("close") }
    id = run:id()
  end
  eq(wb.store.run(id).status, "FINISHED", "normal exit")
  local ok, err = pcall(function()
    local run <close> = wb.experiment { name = exp_name("close") }
    id = run:id()
    run:log(1, { ["train/loss"] = 0.5 })
    error("boom at step 1")
  end)
  truthy(not ok and tostring(err):find("boom", 1, true), "error propagates")
  local r = wb.store.run(id)
  eq(r.status, "FAILED", "error exit")
  truthy(r.error:find("boom at step 1", 1, true), "error message recorded")
  truthy(r.error:find("test_run.lua:", 1, true), "file:line in the error")
  eq(r.metrics["train/loss"], 0.5, "metrics logged before the error are kept")
end)

-- ---------------------------------------------------------------- logging, tags, artifacts

check("log keeps values, NaN and inf", function()
  local run = wb.experiment { name = exp_name("log") }
  for step = 1, 5 do run:log(step, { ["train/loss"] = 1 / step, ["time/step_ms"] = step * 2 }) end
  run:log(6, { ["train/loss"] = 0 / 0 })
  run:log(7, { ["eval/inf"] = math.huge, ["eval/ninf"] = -math.huge, ["eval/flag"] = true })
  if wb.tensor then run:log(8, { ["eval/t"] = wb.tensor { 2.5 } }) end
  local h = wb.store.history(run:id(), "train/loss")
  eq(#h.steps, 6, "rows"); eq(h.steps[3], 3, "step"); eq(h.values[4], 0.25, "value")
  truthy(h.values[6] ~= h.values[6], "NaN kept")
  local r = wb.store.run(run:id())
  truthy(r.metrics["train/loss"] ~= r.metrics["train/loss"], "final value NaN")
  eq(r.metrics["eval/inf"], math.huge, "inf"); eq(r.metrics["eval/ninf"], -math.huge, "-inf")
  eq(r.metrics["eval/flag"], 1.0, "boolean as 1")
  if wb.tensor then eq(r.metrics["eval/t"], 2.5, "one-element tensor") end
  raises(function() run:log(9, { ["x"] = "high" }) end, "x must be a number")
  raises(function() run:log(9, { [1] = 2 }) end, "keys must be strings")
  raises(function() run:log(1.5, { x = 1 }) end, "number has no integer representation")
  run:finish()
end)

check("tags and artifacts", function()
  local run = wb.experiment { name = exp_name("tags"), tags = { team = "systems" } }
  run:tag("phase", "warmup")
  run:tag("phase", "main")
  run:tag("width", 128)
  run:artifact("results/model.ckpt", "checkpoint")
  run:artifact("results/plot.svg")
  local r = wb.store.run(run:id())
  eq(r.tags.team, "systems", "tag from wb.experiment"); eq(r.tags.phase, "main", "tag replaced")
  eq(r.tags.width, "128", "number tag")
  eq(#r.artifacts, 2, "artifacts"); eq(r.artifacts[1].path, "results/model.ckpt", "path")
  eq(r.artifacts[1].kind, "checkpoint", "kind")
  run:finish()
end)

-- ---------------------------------------------------------------- grids and sweeps

local function point_str(p)
  local keys = {}
  for k in pairs(p) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(p[k]) end
  return table.concat(parts, ",")
end

check("grid order", function()
  local g = wb.grid { b = { 1, 2 }, a = { "x", "y" }, c = "fixed" }
  eq(#g, 4, "points")
  local got = {}
  for i, p in ipairs(g) do got[i] = point_str(p) end
  eq(table.concat(got, ";"), "a=x,b=1,c=fixed;a=x,b=2,c=fixed;a=y,b=1,c=fixed;a=y,b=2,c=fixed", "order")
  g = wb.grid({ b = { 1, 2 }, a = { "x", "y" } }, { order = { "b" } })
  got = {}
  for i, p in ipairs(g) do got[i] = point_str(p) end
  eq(table.concat(got, ";"), "a=x,b=1;a=y,b=1;a=x,b=2;a=y,b=2", "order with b first")
  raises(function() wb.grid { a = {} } end, "a has no values")
  raises(function() wb.grid({ a = { 1 } }, { order = { "z" } }) end, "'z'")
end)

check("sweep: children, a failing point, resume", function()
  local name = exp_name("sweep")
  local grid = wb.grid { lr = { 0.1, 0.01 }, seed = { 1, 2 } }
  local fail = true
  local seen_rand = {}
  local function body(p, child)
    if fail and p.lr == 0.01 and p.seed == 2 then error("diverged on purpose") end
    if wb.rand then seen_rand[#seen_rand + 1] = { p.seed, wb.rand { 1 }:item() } end
    child:log(1, { ["eval/acc"] = p.lr + p.seed })
  end
  wb.manual_seed(99) -- the generator's seed is a param of a run without a seed option
  local parent = wb.experiment { name = name, params = { budget = 3 } }
  local res = parent:sweep(grid, body)
  if wb.rand then
    local after = wb.rand { 1 }:item()
    wb.manual_seed(99)
    eq(after, wb.rand { 1 }:item(), "the sweep leaves the generator as it was")
  end
  eq(res.ran, 3, "ran"); eq(res.failed, 1, "failed"); eq(res.skipped, 0, "skipped")
  parent:finish()
  local kids = {}
  for _, r in ipairs(wb.store.runs { experiment = name }) do
    if r.parent_id == parent:id() then kids[#kids + 1] = r end
  end
  eq(#kids, 4, "children")
  eq(kids[4].status, "FAILED", "failing point FAILED"); eq(kids[4].name, "lr=0.01,seed=2", "child name")
  truthy(kids[4].error:find("diverged on purpose", 1, true), "child error")
  for i = 1, 3 do eq(kids[i].status, "FINISHED", "point " .. i) end
  local k1 = wb.store.run(kids[1].id)
  eq(k1.params.lr, "0.1", "child param from the point"); eq(k1.params.seed, "1", "child seed param")
  eq(k1.params.budget, "3", "child has the parent's params"); eq(k1.seed, 1, "child seed column")
  eq(k1.metrics["eval/acc"], 1.1, "child metric")
  -- each point starts from its seed: seed 1 draws the same number as wb.manual_seed(1) does
  if wb.rand then
    wb.manual_seed(1)
    eq(seen_rand[1][2], wb.rand { 1 }:item(), "point seeded")
  end

  -- resume: same experiment, script and params -> only the failed point runs again
  fail = false
  local ran = {}
  wb.manual_seed(99)
  local parent2 = wb.experiment { name = name, params = { budget = 3 } }
  res = parent2:sweep(grid, function(p, child) ran[#ran + 1] = point_str(p); body(p, child) end)
  eq(res.ran, 1, "resume ran"); eq(res.skipped, 3, "resume skipped"); eq(res.failed, 0, "resume failed")
  eq(table.concat(ran, ";"), "lr=0.01,seed=2", "only the missing point ran")
  eq(res.runs[1], kids[1].id, "skipped point reports the earlier run")
  parent2:finish()
  eq(wb.store.run(parent2:id()).tags["wb.sweep_resumes"], tostring(parent:id()), "resume tag")

  -- different params: a new sweep, nothing skipped
  local parent3 = wb.experiment { name = name, params = { budget = 4 } }
  res = parent3:sweep(wb.grid { lr = { 0.1 } }, function(p, child) child:log(1, { ["eval/acc"] = 1 }) end)
  eq(res.ran, 1, "other params ran"); eq(res.skipped, 0, "other params skipped")
  parent3:finish()
end)

check("sweep point that finishes its child itself", function()
  local parent = wb.experiment { name = exp_name("sweep-self") }
  local res = parent:sweep({ { k = 1 }, { k = 2 } }, function(p, child)
    child:log(1, { v = p.k })
    if p.k == 2 then child:finish("FAILED", "rejected by the point") end
  end)
  eq(res.ran, 2, "ran")
  local r2 = wb.store.run(res.runs[2])
  eq(r2.status, "FAILED", "status set by fn"); eq(r2.error, "rejected by the point", "error set by fn")
  raises(function() parent:sweep({ 5 }, function() end) end, "point 1 is a number")
  parent:finish()
end)

-- ---------------------------------------------------------------- progress

check("progress", function()
  local bar = wb.progress { total = 4, label = "test", mode = "plain", batch = 2 }
  for step = 1, 4 do bar:update(step, { loss = 1 / step }) end
  bar:close()
  bar:close() -- a second close is a no-op
  raises(function() bar:update(5) end, "closed")
  raises(function() wb.progress { totl = 3 } end, "unknown field 'totl'", "total")
  raises(function() wb.progress { mode = "fancy" } end, "unknown mode 'fancy'")
  do
    local b <close> = wb.progress { total = 2, mode = "tty" }
    b:update(1, { loss = 0.5 })
  end
end)

check("store queries", function()
  local name = exp_name("query")
  local a = wb.experiment { name = name }
  a:finish()
  local b = wb.experiment { name = name }
  b:finish("KILLED")
  local all = wb.store.runs { experiment = name }
  eq(#all, 2, "runs of the experiment")
  local killed = wb.store.runs { experiment = name, status = "killed" }
  eq(#killed, 1, "status filter"); eq(killed[1].id, b:id(), "killed run")
  raises(function() wb.store.runs { status = "LOST" } end, "FINISHED")
  local none, msg = wb.store.run(1e9)
  truthy(none == nil and msg, "missing run gives nil, msg")
  truthy(#wb.store.path() > 0, "store path")
end)

print(string.format("%d passed, %d failed", passed, failed))
if failed > 0 then os.exit(1) end
