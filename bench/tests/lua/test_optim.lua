-- bench/tests/lua/test_optim.lua: wb.optim (update rules, groups, options, learning rates,
-- state round trips, gradient clipping) and checkpoints (wb.save / wb.load) from Lua.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises
local nn, optim = wb.nn, wb.optim

wb.set_num_threads(1)

local function T(t) return wb.tensor(t) end

-- A parameter with value v and, after the call, gradient g.
local function param(v, g)
  local p = T(v):requires_grad(true)
  if g then (p * T(g)):sum():backward() end
  return p
end

local tmp = os.tmpname()
os.remove(tmp)
local dir = tmp .. "_wbtest"
os.execute("mkdir -p " .. dir)

describe("update rules", function()
  it("SGD: p -= lr * g; momentum buffer starts at g", function()
    local p = param({ 1, 2 }, { 0.5, -1 })
    local o = optim.SGD({ p }, { lr = 0.1 })
    o:step()
    expect(p):near { 0.95, 2.1 }
    local q = param({ 0, 0 }, { 1, 1 })
    local m = optim.SGD({ q }, { lr = 1, momentum = 0.5 })
    m:step() -- buf = g = 1: q = -1
    m:step() -- buf = 0.5 * 1 + 1 = 1.5: q = -2.5
    expect(q):near { -2.5, -2.5 }
    expect(m:steps()):is(2)
  end)
  it("SGD weight decay and Nesterov", function()
    local p = param({ 1 }, { 0 })
    optim.SGD({ p }, { lr = 0.1, weight_decay = 0.5 }):step()
    expect(p):near { 0.95 }
    local q = param({ 0 }, { 1 })
    optim.SGD({ q }, { lr = 1, momentum = 0.9, nesterov = true }):step()
    expect(q):near { -1.9 }
    raises(function() optim.SGD({ param { 0 } }, { nesterov = true }) end, "Nesterov")
  end)
  it("Adam's first step moves each weight by about lr against its gradient", function()
    local p = param({ 1, 1, 1 }, { 3, -0.01, 100 })
    optim.Adam({ p }, { lr = 0.1 }):step()
    expect(p):near({ 0.9, 1.1, 0.9 }, 1e-4)
    local q = param({ 1 }, { 1 })
    optim.Adam({ q }, { lr = 0.1, betas = { 0.5, 0.5 } }):step()
    expect(q):near({ 0.9 }, 1e-4)
    raises(function() optim.Adam({ q }, { betas = { 1.5, 0.9 } }) end, "betas")
  end)
  it("AdamW decays the weights before the Adam step", function()
    local p = param({ 2 }, { 1 })
    optim.AdamW({ p }, { lr = 0.1, weight_decay = 0.5 }):step()
    expect(p):near({ 2 * (1 - 0.05) - 0.1 }, 1e-4)
  end)
  it("RMSprop (and the RMSProp spelling)", function()
    local p = param({ 1 }, { 2 })
    optim.RMSprop({ p }, { lr = 0.01, alpha = 0.9 }):step()
    expect(p):near({ 1 - 0.01 * 2 / math.sqrt(0.1 * 4) }, 1e-5)
    local q = param({ 1 }, { 2 })
    local o = optim.RMSProp({ q }, { lr = 0.01, alpha = 0.9, momentum = 0.5, centered = true })
    o:step()
    expect(o:kind()):is "RMSProp"
    expect(q:item()):lt(1)
  end)
  it("parameters without a grad are skipped", function()
    local p = T { 1 }:requires_grad(true)
    optim.SGD({ p }, { lr = 1 }):step()
    expect(p):eq { 1 }
  end)
end)

describe("construction", function()
  it("accepts a module, a list of tensors, or groups with their own options", function()
    local m = nn.Linear(3, 2)
    expect(optim.SGD(m, { lr = 0.1 }):get_lr()):is(0.1)
    local a, b = param({ 1 }, { 1 }), param({ 1 }, { 1 })
    local o = optim.SGD({ { params = { a } }, { params = { b }, lr = 0.5 } }, { lr = 0.1 })
    expect(o:num_groups()):is(2)
    expect(o:get_lr(1)):is(0.1)
    expect(o:get_lr(2)):is(0.5)
    o:step()
    expect(a):near { 0.9 }
    expect(b):near { 0.5 }
    o:set_lr(0.2, 2)
    expect(o:get_lr(2)):is(0.2)
    expect(o:get_lr(1)):is(0.1)
    o:set_lr(0.3)
    expect(o:get_lr(1)):is(0.3)
    expect(o:get_lr(2)):is(0.3)
    raises(function() o:get_lr(3) end, "group 3 out of range (1..2)")
    expect(tostring(o)):matches "SGD(lr="
  end)
  it("unknown options and optimizers are errors listing the known ones", function()
    local p = param { 1 }
    raises(function() optim.SGD({ p }, { lr = 0.1, momentom = 0.9 }) end,
      "SGD", "unknown option \"momentom\"", "lr, momentum, dampening, nesterov, weight_decay")
    raises(function() optim.Adam({ p }, { momentum = 0.9 }) end, "Adam", "unknown option \"momentum\"", "betas")
    raises(function() optim.SGD({ { params = { p }, lr = 1, bogus = 2 } }) end, "unknown option \"bogus\"", "params")
    raises(function() return optim.Adagrad end, "Adagrad", "SGD, Adam, AdamW, RMSprop")
    raises(function() optim.SGD({ p }, { lr = "fast" }) end, "option \"lr\"", "number expected")
    raises(function() optim.SGD({ p, 3 }) end, "entry 2", "not a tensor")
    raises(function() optim.SGD({ p }, { lr = -1 }) end, "learning rate")
    raises(function() optim.SGD({ wb.tensor({ 1 }, { dtype = "float64" }) }) end, "float32")
  end)
  it("zero_grad drops the grads by default, or zeroes them in place", function()
    local p = param({ 1, 2 }, { 1, 1 })
    local o = optim.SGD({ p })
    o:zero_grad(false)
    expect(p:grad()):eq { 0, 0 }
    o:zero_grad()
    expect(p:grad()):is(nil)
  end)
  it("the optimizer keeps its parameters alive after the model is gone", function()
    local o
    do
      local m = nn.Linear(2, 2)
      o = optim.SGD(m:parameters(), { lr = 0.1 })
    end
    collectgarbage()
    collectgarbage()
    o:step()
    expect(o:steps()):is(1)
  end)
end)

describe("state and clipping", function()
  it("state() / load_state() replays the same trajectory", function()
    wb.manual_seed(9)
    local m = nn.Linear(4, 3)
    local o = optim.Adam(m, { lr = 0.05 })
    local x, y = wb.randn { 8, 4 }, wb.randn { 8, 3 }
    local function step()
      o:zero_grad()
      nn.mse_loss(m(x), y):backward()
      o:step()
    end
    for _ = 1, 3 do step() end
    local st = o:state()
    expect(st.kind):is "Adam"
    expect(st.step):is(3)
    expect(st.lr):eq { 0.05 }
    expect(st.buffers["0.exp_avg"]:shape()):eq { 3, 4 }
    local saved = {}
    for i, p in ipairs(m:parameters()) do saved[i] = p:clone() end
    for _ = 1, 3 do step() end
    local after = m:parameters()[1]:clone()
    for i, p in ipairs(m:parameters()) do p:copy_(saved[i]) end
    o:set_lr(1)
    o:load_state(st)
    expect(o:get_lr()):is(0.05)
    for _ = 1, 3 do step() end
    expect(m:parameters()[1]):eq(after)
    local sgd = optim.SGD(m)
    raises(function() sgd:load_state(st) end, "Adam", "SGD")
    local bad = o:state()
    bad.buffers["0.exp_avg"] = wb.zeros { 2, 2 }
    raises(function() o:load_state(bad) end, "exp_avg")
  end)
  it("clip_grad_norm returns the norm before clipping and scales the grads", function()
    local a, b = param({ 0, 0 }, { 3, 0 }), param({ 0 }, { 4 })
    expect(optim.clip_grad_norm({ a, b }, 1)):near(5)
    expect(a:grad()):near({ 0.6, 0 }, 1e-5)
    expect(b:grad()):near({ 0.8 }, 1e-5)
    expect(optim.clip_grad_norm({ a, b }, 10)):near(1, 1e-5)
    expect(a:grad()):near({ 0.6, 0 }, 1e-5)
    local m = nn.Linear(2, 1)
    m(wb.ones { 1, 2 }):sum():backward()
    expect(optim.clip_grad_norm(m, 0.5)):near(math.sqrt(3))
  end)
end)

describe("checkpoints", function()
  -- model and optimizer with data drawn from the global generator, so that a resumed run
  -- matches only if the generator state is restored too
  local function setup(seed)
    wb.manual_seed(seed)
    local m = nn.Sequential { nn.Linear(3, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2) }
    return m, optim.SGD(m, { lr = 0.05, momentum = 0.9 })
  end
  local function train(m, o, steps)
    for _ = 1, steps do
      local x = wb.randn { 16, 3 }
      local y = (x:sum(2):gt(0)):long()
      o:zero_grad()
      nn.cross_entropy(m(x), y):backward()
      o:step()
    end
  end

  it("save, continue, load into a fresh model, continue: identical parameters", function()
    local path = dir .. "/a.wbc"
    local m, o = setup(1)
    train(m, o, 5)
    wb.save(path, { model = m, optim = o, rng = true, extra = { epoch = 5, lr = 0.05, note = "mid", w = wb.ones { 2 } } })
    train(m, o, 5)
    local want = m:parameters()
    local m2, o2 = setup(2)
    local extra = wb.load(path, { model = m2, optim = o2, rng = true })
    expect(extra.epoch):is(5)
    expect(math.type(extra.epoch)):is "integer"
    expect(extra.lr):is(0.05)
    expect(extra.note):is "mid"
    expect(extra.w):eq { 1, 1 }
    expect(o2:steps()):is(5)
    train(m2, o2, 5)
    local got = m2:parameters()
    for i = 1, #want do expect(got[i]):eq(want[i]) end
    expect(m2:named_buffers()["2.running_mean"]):eq(m:named_buffers()["2.running_mean"])
  end)
  it("load without a model reads the extra values", function()
    local path = dir .. "/b.wbc"
    local m = nn.Linear(2, 2)
    wb.save(path, { model = m, extra = { step = 7 } })
    expect(wb.load(path).step):is(7)
    raises(function() wb.load(path, { optim = optim.SGD(m) }) end, "needs the model")
  end)
  it("mismatched and truncated files are errors with the core's message; nothing changes", function()
    local path = dir .. "/c.wbc"
    local m, o = setup(3)
    wb.save(path, { model = m, optim = o })
    local other = nn.Sequential { nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2) }
    local before = other:parameters()[1]:clone()
    raises(function() wb.load(path, { model = other }) end, "does not match the model", "0.weight", "(4, 3)")
    expect(other:parameters()[1]):eq(before)
    raises(function() wb.load(path, { model = m, optim = optim.Adam(m) }) end, "SGD", "Adam")
    raises(function() wb.load(path, { model = m, rng = true }) end, "no RNG state")
    local f = assert(io.open(path, "rb"))
    local bytes = f:read("a")
    f:close()
    local cut = dir .. "/cut.wbc"
    f = assert(io.open(cut, "wb"))
    f:write(bytes:sub(1, #bytes - 20))
    f:close()
    raises(function() wb.load(cut, { model = m }) end, cut, "truncated or corrupt")
    raises(function() wb.load(dir .. "/missing.wbc", { model = m }) end, "missing.wbc", "cannot open")
  end)
  it("bad options and values are errors", function()
    local m = nn.Linear(2, 2)
    raises(function() wb.save(dir .. "/d.wbc", { model = m, extra = { done = true } }) end,
      "extra \"done\" is a boolean", "integers, numbers, strings or tensors")
    raises(function() wb.save(dir .. "/d.wbc", { modle = m }) end, "unknown option \"modle\"", "model, optim, rng, extra")
    raises(function() wb.save(dir .. "/d.wbc", { optim = optim.SGD(m) }) end, "model option is required")
    raises(function() wb.save(dir .. "/d.wbc", { model = 3 }) end, "module expected")
    raises(function() wb.save("/nonexistent-dir/x.wbc", { model = m }) end, "/nonexistent-dir/x.wbc")
  end)
end)

os.execute("rm -rf " .. dir)
spec.finish()
