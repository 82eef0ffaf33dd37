-- bench/tests/lua/test_device.lua: devices from Lua: wb.device, tensor:to(device),
-- tensor:device(), model:to(device), optimizer steps on device tensors.
-- The CPU part runs everywhere: "cpu" works, bad names list the valid ones, and on a machine
-- without CUDA (or without a GPU) wb.device("cuda") is a clear error naming the device. The GPU
-- part needs a GPU: without one the test ends with exit code 77 (CTest: skipped) once the CPU
-- part has passed.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises
local nn, optim = wb.nn, wb.optim

local has_cuda = wb.device_available("cuda")

describe("cpu", function()
  it("the default device is cpu; wb.device returns the previous one", function()
    expect(wb.device()):is("cpu")
    expect(wb.device("cpu")):is("cpu")
    expect(wb.zeros(2, 3):device()):is("cpu")
    expect(wb.tensor { 1, 2 }:device()):is("cpu")
  end)
  it("to('cpu') of a cpu tensor is the same values; to(dtype) still converts", function()
    local x = wb.tensor { 1.5, 2 }
    expect(x:to("cpu")):eq { 1.5, 2 }
    expect(x:to("int64"):dtype()):is("int64")
    expect(x:to("float64"):dtype()):is("float64")
  end)
  it("a module moves to cpu (a no-op) and stays usable", function()
    local m = nn.Linear(3, 2)
    expect(m:to("cpu")):is(m)
    expect(m(wb.ones(4, 3)):shape()):eq { 4, 2 }
  end)
  it("bad device names list the valid ones", function()
    raises(function() wb.device("gpu") end, "unknown device \"gpu\"", "cpu, cuda, cuda:N")
    raises(function() wb.ones(2):to("tpu") end, "unknown dtype or device \"tpu\"", "cpu, cuda")
    raises(function() nn.Linear(2, 2):to("metal") end, "unknown device \"metal\"")
    raises(function() wb.zeros(2, { device = "cuda:x" }) end, "unknown device")
  end)
  if not has_cuda then
    it("without a GPU, cuda is a clear error naming the device", function()
      raises(function() wb.device("cuda") end, "device cuda is not available")
      raises(function() wb.ones(2):to("cuda") end, "device cuda is not available")
      raises(function() wb.zeros(2, { device = "cuda" }) end, "device cuda is not available")
      raises(function() nn.Linear(2, 2):to("cuda") end, "cuda", "not available")
      expect(wb.device()):is("cpu") -- unchanged by the failed call
      expect(wb.device_available("cuda")):is(false)
      expect(wb.device_available("cpu")):is(true)
    end)
  end
end)

if not has_cuda then
  spec.finish()
  print("skipped: no GPU (the cuda part of test_device.lua needs one)")
  os.exit(77)
end

describe("cuda", function()
  it("wb.device('cuda') makes new tensors there; 'cpu' goes back", function()
    expect(wb.device("cuda")):is("cpu")
    local x = wb.zeros(2, 3)
    expect(x:device()):is("cuda")
    expect(wb.tensor { 1, 2, 3 }:device()):is("cuda")
    expect(wb.randn(4):device()):is("cuda")
    expect(wb.device("cpu")):is("cuda")
    expect(wb.zeros(2):device()):is("cpu")
  end)
  it("tensor:to moves values both ways; ops, numbers and tostring work on the device", function()
    local x = wb.tensor { { 1, -2 }, { 3, 4 } }:to("cuda")
    expect(x:device()):is("cuda")
    local y = (x * 2 + 1):relu()
    expect(y:device()):is("cuda")
    expect(y:to("cpu")):eq { { 3, 0 }, { 7, 9 } }
    expect(y):eq { { 3, 0 }, { 7, 9 } } -- totable copies to the host
    expect(tostring(y)):matches("device=cuda")
    expect(y:sum():item()):is(19.0)
  end)
  it("one seed gives the same random numbers on both devices", function()
    wb.manual_seed(3)
    local a = wb.rand(1000)
    wb.manual_seed(3)
    local b = wb.rand(1000, { device = "cuda" })
    expect(b:device()):is("cuda")
    expect(b:to("cpu")):eq(a)
  end)
  it("gradients flow back across devices", function()
    local x = wb.tensor { 1, 2, 3 }:requires_grad(true)
    local y = (x:to("cuda") * x:to("cuda")):sum()
    y:backward()
    expect(x:grad():device()):is("cpu")
    expect(x:grad()):near { 2, 4, 6 }
  end)
  it("model:to('cuda') moves parameters in place; an optimizer built after trains there", function()
    wb.manual_seed(1)
    local m = nn.Sequential { nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3) }
    wb.manual_seed(1)
    local ref = nn.Sequential { nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3) }
    local params = m:parameters()
    expect(m:to("cuda")):is(m)
    for _, p in ipairs(m:parameters()) do expect(p:device()):is("cuda") end
    expect(params[1]:device()):is("cuda") -- the same objects, now on the device
    local sgd = optim.SGD(m:parameters(), { lr = 0.1, momentum = 0.9 })
    local sgd_ref = optim.SGD(ref:parameters(), { lr = 0.1, momentum = 0.9 })
    local x, y = wb.randn(16, 6), wb.tensor({ 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0 }, { dtype = "int64" })
    local xd, yd = x:to("cuda"), y:to("cuda")
    for _ = 1, 5 do
      local loss = nn.cross_entropy(m(xd), yd)
      sgd:zero_grad(); loss:backward(); sgd:step()
      local lref = nn.cross_entropy(ref(x), y)
      sgd_ref:zero_grad(); lref:backward(); sgd_ref:step()
      expect(loss:item()):near(lref:item(), 1e-4)
    end
    expect(m:parameters()[1]:to("cpu")):near(ref:parameters()[1], 1e-4)
    m:to("cpu")
    expect(m:parameters()[1]:device()):is("cpu")
  end)
  it("mixing devices in one op is an error naming them", function()
    raises(function() return wb.ones(2):to("cuda") + wb.ones(2) end, "different devices")
  end)
  it("deterministic mode and TF32 switches return the previous setting", function()
    expect(wb.set_deterministic(true)):is(false)
    expect(wb.set_deterministic(false)):is(true)
    expect(wb.set_allow_tf32(false)):is(false)
  end)
end)

spec.finish()
