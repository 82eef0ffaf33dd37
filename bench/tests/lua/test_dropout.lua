-- bench/tests/lua/test_dropout.lua: wb.nn.GyroDropout, wb.nn.BlockDropout and
-- wb.nn.BlockSequential from Lua (nn/gyro_dropout.h): options and their errors, the gyro state
-- as buffers, block-wise equal to dense with the mask, and a resumed run equal to an
-- uninterrupted one.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises
local nn = wb.nn

wb.set_num_threads(1)

local function buffer(m, name)
  for k, v in pairs(m:named_buffers()) do
    if k == name or k:sub(-#name - 1) == "." .. name then return v end
  end
end

describe("GyroDropout", function()
  it("options, defaults and errors", function()
    local g = nn.GyroDropout { p = 0.5, size = 64, iters = 100 }
    expect(g:type()):is "GyroDropout"
    expect(buffer(g, "pool"):shape()):eq { 256, 64 }
    expect(buffer(g, "draw"):shape()):eq { 16 }
    raises(function() nn.GyroDropout { p = 1, size = 64, iters = 10 } end, "p must be in [0, 1)")
    raises(function() nn.GyroDropout { sigma = 8, tau = 16, size = 64, iters = 10 } end, "sigma >= tau")
    raises(function() nn.GyroDropout { size = 100, block = 32, iters = 10 } end, "block=32 does not divide size=100")
    raises(function() nn.GyroDropout { size = 64, iters = 10, sigmaa = 1 } end, "unknown option \"sigmaa\"",
      "p, size, sigma, tau, iters, period, block, shared")
    raises(function() nn.GyroDropout { size = 64 } end, "give iters")
  end)
  it("one drawn mask per row group, scaled; the whole network in evaluation", function()
    wb.manual_seed(2)
    local g = nn.GyroDropout { p = 0.25, size = 32, sigma = 8, tau = 4, period = 3 }
    local x = wb.ones { 10, 32 }
    local y = g(x)
    local pool, draw = buffer(g, "pool"):totable(), buffer(g, "draw"):totable()
    local yt = y:totable()
    for r = 1, 10 do
      local grp = 0
      while grp + 1 < 4 and (grp + 1) * 10 // 4 <= r - 1 do grp = grp + 1 end
      for u = 1, 32 do
        expect(yt[r][u]):near(pool[draw[grp + 1] + 1][u] / 0.75)
      end
    end
    expect(buffer(g, "step"):totable()[1]):is(1)
    g:evaluate()
    expect(g(x):totable()):eq(x:totable())
  end)
end)

describe("BlockDropout and BlockSequential", function()
  it("block-wise equals dense with the same mask, forward and gradients", function()
    local function model(seq)
      wb.manual_seed(4)
      return seq {
        nn.Linear(20, 64), nn.ReLU(), nn.BlockDropout { p = 0.5, block = 16, groups = 2 },
        nn.Linear(64, 32), nn.ReLU(), nn.GyroDropout { p = 0.5, size = 32, block = 8, sigma = 8, tau = 4, period = 2 },
        nn.Linear(32, 5) }
    end
    local a, b = model(nn.Sequential), model(nn.BlockSequential)
    expect(b:type()):is "BlockSequential"
    local x = wb.randn { 9, 20 }
    local lab = wb.tensor({ 0, 1, 2, 3, 4, 0, 1, 2, 3 }, { dtype = "int64" })
    for _ = 1, 3 do
      wb.manual_seed(7)
      local la = nn.cross_entropy(a(x), lab)
      la:backward()
      wb.manual_seed(7)
      local lb = nn.cross_entropy(b(x), lab)
      lb:backward()
      expect(lb:item()):near(la:item(), 1e-5)
      local pa, pb = a:parameters(), b:parameters()
      for i = 1, #pa do expect(pb[i]:grad()):near(pa[i]:grad(), 1e-5) end
    end
    raises(function() nn.BlockDropout { p = 0.5, block = 24 }(wb.ones { 2, 40 }) end, "block=24 does not divide")
    raises(function() nn.BlockDropout { p = 0.5, size = 3 } end, "unknown option \"size\"", "p, block, groups")
  end)
  it("a resumed run continues exactly as an uninterrupted one", function()
    local path = os.tmpname()
    local function make(seed)
      wb.manual_seed(seed)
      local m = nn.BlockSequential {
        nn.Linear(16, 32), nn.ReLU(), nn.GyroDropout { p = 0.5, size = 32, block = 8, sigma = 8, tau = 4, iters = 20 },
        nn.Linear(32, 32), nn.ReLU(), nn.BlockDropout { p = 0.3, block = 8, groups = 3 }, nn.Linear(32, 3) }
      return m, wb.optim.SGD(m:parameters(), { lr = 0.1, momentum = 0.9 })
    end
    local function train(m, o, from, to)
      for s = from, to do
        wb.manual_seed(1000 + s) -- data of step s; the dropout draws continue from the checkpointed state
        local x, y = wb.randn { 11, 16 }, wb.tensor({ 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1 }, { dtype = "int64" })
        o:zero_grad(); nn.cross_entropy(m(x), y):backward(); o:step()
      end
    end
    local a, oa = make(1)
    train(a, oa, 1, 6)
    wb.save(path, { model = a, optim = oa, rng = true })
    train(a, oa, 7, 12)
    local b, ob = make(2)
    wb.load(path, { model = b, optim = ob, rng = true })
    train(b, ob, 7, 12)
    local pa, pb = a:parameters(), b:parameters()
    for i = 1, #pa do expect(pb[i]:totable()):eq(pa[i]:totable()) end
    os.remove(path)
  end)
end)

spec.finish()
