-- bench/tests/lua/test_schedules.lua: wb.schedules from Lua (schedules/lua.c): a constructor per
-- row of the schedule table, closed forms at start, middle and end, warm-up and min_lr, sampling
-- rates, budget rescaling, reduce-on-plateau, driving an optimizer, and the errors (unknown
-- schedules and options, bad values, steps outside the budget).
local wb = require "wb"
local schedules = require "wb.schedules"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises

wb.set_num_threads(1)

local closed = {
  constant = function() return 1 end,
  step = function(z) return 0.1 ^ math.floor(z * 3 + 1e-9) end,
  multistep = function(z) return z >= 0.75 and 0.01 or z >= 0.5 and 0.1 or 1 end,
  exponential = function(z) return 0.01 ^ z end,
  linear = function(z) return 1 - z end,
  cosine = function(z) return (1 + math.cos(math.pi * z)) / 2 end,
  onecycle = function(z)
    local lo = 1 / 25
    local hi_end = lo / 1e4
    if z < 0.3 then return lo + (1 - lo) * (1 - math.cos(math.pi * z / 0.3)) / 2 end
    return hi_end + (1 - hi_end) * (1 + math.cos(math.pi * (z - 0.3) / 0.7)) / 2
  end,
  poly = function(z) return (1 - z) ^ 2 end,
  invsqrt = function(z) return 1 / math.sqrt(1 + z / 0.05) end,
  plateau = function() return 1 end,
  rex = function(z) return (1 - z) / (1 - 0.5 * z) end,
}

describe("the table", function()
  it("has every profile of the issue, each with a constructor and info", function()
    local names = schedules.names()
    expect(#names):is(11)
    for _, n in ipairs(names) do
      expect(closed[n]):type "function"
      expect(schedules[n]):type "function"
      local info = schedules.info(n)
      expect(info.name):is(n)
      expect(info.formula):type "string"
    end
    expect(schedules.info("rex").knobs[1].name):is "d"
    expect(schedules.info("rex").knobs[1].default):is(0.5)
    expect(schedules.info("plateau").metric):is(true)
    expect(schedules.info("plateau").knobs[2].default):is(10)
    expect(math.type(schedules.info("plateau").knobs[2].default)):is "integer"
  end)
  it("is reachable as wb.schedules once required", function()
    expect(wb.schedules == schedules):is(true)
  end)
end)

describe("profiles", function()
  it("match their closed forms at start, middle and end", function()
    for _, n in ipairs(schedules.names()) do
      local s = schedules[n] { base_lr = 0.2, total_steps = 1000 }
      for _, step in ipairs { 0, 250, 500, 750, 1000 } do
        expect(s(step)):near(0.2 * closed[n](step / 1000), 1e-12)
        expect(s:lr(step)):is(s(step))
      end
    end
  end)
  it("REX: d = 0 is linear, d = 0.9 stays higher longer", function()
    local r0 = schedules.rex { base_lr = 1, total_steps = 100, d = 0 }
    local r9 = schedules.rex { base_lr = 1, total_steps = 100, d = 0.9 }
    for t = 0, 100, 10 do expect(r0(t)):near(1 - t / 100, 1e-12) end
    expect(r9(50)):near(0.5 / 0.55, 1e-12)
    expect(r9(100)):is(0)
  end)
  it("are non-increasing where the table says monotone", function()
    for _, n in ipairs(schedules.names()) do
      if schedules.info(n).monotone then
        local _, lrs = schedules[n] { base_lr = 1, total_steps = 300 }:curve()
        for i = 2, #lrs do expect(lrs[i]):le(lrs[i - 1]) end
      end
    end
  end)
end)

describe("warm-up, minimum, sampling, budget", function()
  it("warm-up ramps (s + 1) / (W + 1) to base_lr, then the profile runs from min_lr up", function()
    local s = schedules.cosine { base_lr = 0.1, total_steps = 110, warmup = 10, min_lr = 0.001 }
    for t = 0, 9 do expect(s(t)):near(0.1 * (t + 1) / 11, 1e-12) end
    expect(s(10)):near(0.1, 1e-12)
    expect(s(60)):near(0.001 + 0.099 * 0.5, 1e-12)
    expect(s(110)):near(0.001, 1e-12)
    local f = schedules.rex { base_lr = 1, total_steps = 200, warmup_frac = 0.1 }
    expect(f:options().warmup):is(20)
    expect(f:options().warmup_frac):is(0.1)
  end)
  it("every ending profile ends at min_lr", function()
    for _, n in ipairs(schedules.names()) do
      if schedules.info(n).ends_at_0 then
        expect(schedules[n] { base_lr = 0.5, total_steps = 77, min_lr = 0.02 }(77)):near(0.02, 1e-12)
      end
    end
  end)
  it("samples every k steps (every epoch)", function()
    local s = schedules.rex { base_lr = 1, total_steps = 50, every = 10 }
    for t = 0, 50 do expect(s(t)):near(closed.rex(math.floor(t / 10) / 5), 1e-12) end
  end)
  it("rescales to a new budget", function()
    local s = schedules.multistep { base_lr = 1, total_steps = 40, milestones = { 0.25, 0.5 }, gamma = 0.5 }
    local r = s:rescale(400)
    expect(r:total_steps()):is(400)
    expect(r:options().milestones):eq { 0.25, 0.5 }
    for t = 0, 40 do expect(r(10 * t)):is(s(t)) end
    local w = schedules.rex { base_lr = 1, total_steps = 100, warmup = 10 }:rescale(25)
    expect(w:options().warmup):is(3)
  end)
  it("curve(n) gives n evenly spaced steps", function()
    local steps, lrs = schedules.linear { base_lr = 2, total_steps = 10 }:curve(3)
    expect(steps):eq { 0, 5, 10 }
    expect(lrs):near { 2, 1, 0 }
  end)
end)

describe("reduce-on-plateau and optimizers", function()
  it("lowers the lr when the metric stops improving", function()
    local s = schedules.plateau { base_lr = 1, total_steps = 100, patience = 1, factor = 0.5 }
    expect(s:observe(1.0)):is(false)
    expect(s:observe(1.0)):is(false)
    expect(s:observe(1.0)):is(true)
    expect(s(10)):is(0.5)
    expect(s:state().reductions):is(1)
    raises(function() schedules.rex { base_lr = 1, total_steps = 10 }:observe(1) end, "not metric-driven")
    expect(schedules.rex { base_lr = 1, total_steps = 10 }:state()):is(nil)
    local up = schedules.plateau { base_lr = 1, total_steps = 10, patience = 0, maximize = true }
    up:observe(0.5)
    expect(up:observe(0.6)):is(false)
    expect(up:observe(0.6)):is(true)
  end)
  it("drives an optimizer's lr, and training with REX converges", function()
    wb.manual_seed(3)
    local train = wb.data.two_moons { n = 256, noise = 0.1, seed = 1 }
    local model = wb.nn.Sequential { wb.nn.Linear(2, 16), wb.nn.Tanh(), wb.nn.Linear(16, 2) }
    local opt = wb.optim.SGD(model, { lr = 123, momentum = 0.9 })
    local s = schedules.rex { base_lr = 0.1, total_steps = 80, warmup = 4 }
    local step, first, last = 0, nil, nil
    for _ = 1, 10 do
      for x, y in train:batches { size = 32, shuffle = true, seed = 1 } do
        expect(s:apply(opt, step)):is(s(step))
        expect(opt:get_lr()):near(s(step), 1e-15)
        local loss = wb.nn.cross_entropy(model(x), y)
        opt:zero_grad(); loss:backward(); opt:step()
        first = first or loss:item()
        last = loss:item()
        step = step + 1
      end
    end
    expect(step):is(80)
    expect(last):lt(first)
  end)
end)

describe("errors", function()
  it("unknown schedules list the known ones", function()
    local msg = raises(function() return schedules.warmcos end, "unknown schedule 'warmcos'", "known schedules")
    for _, n in ipairs(schedules.names()) do expect(msg):matches(n) end
    raises(function() schedules.new("warmcos", { base_lr = 1, total_steps = 1 }) end, "known schedules: constant")
    raises(function() schedules.info("x") end, "unknown schedule 'x'")
    expect(schedules.new("rex", { base_lr = 1, total_steps = 4 })(2)):near(2 / 3, 1e-12)
  end)
  it("unknown options and bad values are named", function()
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, gamma = 0.5 } end,
      "unknown option \"gamma\"", "known options: base_lr", "d")
    raises(function() schedules.rex { total_steps = 10 } end, "base_lr and total_steps are required")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10.5 } end, "total_steps")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, d = 1 } end, "d = 1 is outside [0, 1)")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, min_lr = 2 } end, "min_lr")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, warmup = 10 } end, "warmup")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, warmup = 1, warmup_frac = 0.1 } end, "not both")
    raises(function() schedules.rex { base_lr = 1, total_steps = 10, every = 0 } end, "every")
    raises(function() schedules.plateau { base_lr = 1, total_steps = 10, maximize = 1 } end, "maximize", "boolean")
    raises(function() schedules.plateau { base_lr = 1, total_steps = 10, patience = 1.5 } end, "patience")
    raises(function() schedules.multistep { base_lr = 1, total_steps = 10, milestones = { 0.5, 0.2 } } end, "increasing")
    local s = schedules.linear { base_lr = 1, total_steps = 10 }
    raises(function() return s(11) end, "outside 0 .. total_steps")
    raises(function() return s(-1) end, "outside 0 .. total_steps")
  end)
  it("closes", function()
    local s = schedules.linear { base_lr = 1, total_steps = 10 }
    do local c <close> = s end
    raises(function() return s(1) end, "closed")
    expect(tostring(s)):matches "closed"
  end)
end)

spec.finish()
