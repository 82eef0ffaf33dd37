-- bench/tests/lua/test_tensor.lua: tensors from Lua: constructors, operators, every op family,
-- 1-based and negative dims, 0-based contents, gradients, grad mode and error messages.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises

wb.set_num_threads(1) -- tests run side by side under ctest -j; tiny tensors gain nothing from threads

local function T(t, opts) return wb.tensor(t, opts) end
local function L(t) return wb.tensor(t, { dtype = "int64" }) end

describe("constructors", function()
  it("tensor from nested tables, shape, numel, dim, dtype", function()
    local x = T { { 1, 2, 3 }, { 4, 5, 6 } }
    expect(x:shape()):eq { 2, 3 }
    expect(x:shape(1)):is(2)
    expect(x:shape(-1)):is(3)
    expect(x:numel()):is(6)
    expect(x:dim()):is(2)
    expect(x:dtype()):is "float32"
    expect(x):eq { { 1, 2, 3 }, { 4, 5, 6 } }
    expect(#x):is(2)
  end)
  it("dtypes: int64 and float64, conversions", function()
    local i = L { 1, 2, 3 }
    expect(i:dtype()):is "int64"
    expect(math.type(i:totable()[1])):is "integer"
    expect(T({ 1.5 }, { dtype = "float64" }):dtype()):is "float64"
    expect(i:float():dtype()):is "float32"
    expect(i:double():dtype()):is "float64"
    expect(T { 1.7, -2.2 }:long()):eq { 1, -2 }
    expect(T { 1 }:to("int64"):dtype()):is "int64"
    expect(T { 1 }:to("double"):dtype()):is "float64"
    raises(function() T({ 1 }, { dtype = "int8" }) end, "unknown dtype", "int8", "float32")
  end)
  it("zeros, ones, full, arange, like, rand, randn", function()
    expect(wb.zeros { 2, 2 }):eq { { 0, 0 }, { 0, 0 } }
    expect(wb.ones(3)):eq { 1, 1, 1 }
    expect(wb.full({ 2 }, 7)):eq { 7, 7 }
    expect(wb.arange(4)):eq { 0, 1, 2, 3 }
    expect(wb.arange(3, { dtype = "int64" }):dtype()):is "int64"
    expect(wb.zeros({ 2 }, { dtype = "float64" }):dtype()):is "float64"
    expect(wb.ones_like(T { { 1, 2 } })):eq { { 1, 1 } }
    expect(wb.zeros_like(L { 5 }):dtype()):is "int64"
    local r = wb.rand { 1000 }
    expect(r:min():item()):ge(0)
    expect(r:max():item()):lt(1)
    local n = wb.randn { 4000 }
    expect(n:mean():item()):near(0, 0.1)
    expect(n:var():item()):near(1, 0.1)
  end)
  it("manual_seed makes draws reproducible", function()
    wb.manual_seed(42)
    local a = wb.randn { 5 }
    wb.manual_seed(42)
    expect(wb.randn { 5 }):eq(a)
    local p = wb.randperm(10)
    expect(p:dtype()):is "int64"
    expect(p:sort()):eq(wb.arange(10, { dtype = "int64" }))
    local c = wb.categorical(T { 0, 0, 1 }, 5)
    expect(c):eq { 2, 2, 2, 2, 2 }
  end)
  it("ragged tables and bad entries are errors", function()
    raises(function() T { { 1, 2 }, { 3 } } end, "ragged")
    raises(function() T { "a" } end, "numbers")
  end)
  it("item, totable of a 0-dim tensor, tostring", function()
    local s = T { 1, 2, 3 }:sum()
    expect(s:shape()):eq {}
    expect(s:item()):is(6.0)
    expect(s:totable()):is(6.0)
    expect(tostring(T { 1, 2 })):matches "shape=(2,), dtype=float32"
    expect(tostring(wb.zeros { 40 })):matches "more"
    raises(function() return #s end, "0-dim")
    raises(function() T { 1, 2 }:item() end, "item")
  end)
end)

describe("operators", function()
  local a, b = T { 1, 2, 3 }, T { 4, 5, 6 }
  it("+ - * / with tensors and numbers, both orders", function()
    expect(a + b):eq { 5, 7, 9 }
    expect(a - b):eq { -3, -3, -3 }
    expect(a * b):eq { 4, 10, 18 }
    expect(b / a):near { 4, 2.5, 2 }
    expect(a + 1):eq { 2, 3, 4 }
    expect(1 + a):eq { 2, 3, 4 }
    expect(a - 1):eq { 0, 1, 2 }
    expect(10 - a):eq { 9, 8, 7 }
    expect(a * 2):eq { 2, 4, 6 }
    expect(2 * a):eq { 2, 4, 6 }
    expect(a / 2):near { 0.5, 1, 1.5 }
    expect(6 / a):near { 6, 3, 2 }
    expect(-a):eq { -1, -2, -3 }
    expect(a ^ 2):eq { 1, 4, 9 }
    expect(2 ^ a):near { 2, 4, 8 }
    expect(a ^ b):near { 1, 32, 729 }
  end)
  it("broadcasting", function()
    expect(T { { 1 }, { 2 } } + T { 10, 20 }):eq { { 11, 21 }, { 12, 22 } }
  end)
  it("method and function forms agree", function()
    expect(a:add(b)):eq(wb.add(a, b))
    expect(a:mul(3)):eq { 3, 6, 9 }
    expect(wb.exp(a)):eq(a:exp())
  end)
  it("__eq is identity, not elementwise", function()
    local c = a
    expect(c == a):is(true)
    expect(T { 1, 2, 3 } == a):is(false)
  end)
  it("shape mismatch names the op and both shapes", function()
    raises(function() return a + T { 1, 2 } end, "add", "(3,)", "(2,)")
    raises(function() return a:matmul(T { { 1, 2 } }) end, "matmul")
  end)
  it("bad operands are argument errors", function()
    raises(function() return a + "x" end, "number expected")
    raises(function() return a + {} end, "number expected")
  end)
end)

describe("elementwise", function()
  local x = T { -2, -0.5, 0, 1, 4 }
  it("unary math", function()
    expect(x:abs()):eq { 2, 0.5, 0, 1, 4 }
    expect(x:neg()):eq { 2, 0.5, 0, -1, -4 }
    expect(T { 1, 4 }:sqrt()):near { 1, 2 }
    expect(T { 1, 4 }:rsqrt()):near { 1, 0.5 }
    expect(T { 0, 1 }:exp()):near { 1, math.exp(1) }
    expect(T { 1, math.exp(2) }:log()):near { 0, 2 }
    expect(x:pow(2)):near { 4, 0.25, 0, 1, 16 }
  end)
  it("activations", function()
    expect(x:relu()):eq { 0, 0, 0, 1, 4 }
    expect(x:leaky_relu(0.1)):near { -0.2, -0.05, 0, 1, 4 }
    expect(T { 0 }:sigmoid()):near { 0.5 }
    expect(T { 0, 100 }:tanh()):near { 0, 1 }
    expect(T { 0 }:gelu()):near { 0 }
    expect(T { 1 }:gelu()):near({ 0.841345 }, 1e-4)
    expect(T { 1 }:gelu { approximate = "tanh" }):near({ 0.841192 }, 1e-4)
    expect(T { 0 }:softplus()):near { math.log(2) }
    expect(T { 0 }:softplus { beta = 2 }):near { math.log(2) / 2 }
    raises(function() x:gelu { approximate = "fast" } end, "approximate", "tanh")
    raises(function() x:softplus { alpha = 1 } end, "unknown option", "beta, threshold")
  end)
  it("clamp, maximum, minimum", function()
    expect(x:clamp(-1, 1)):eq { -1, -0.5, 0, 1, 1 }
    expect(x:clamp(0)):eq { 0, 0, 0, 1, 4 }
    expect(x:clamp(nil, 0)):eq { -2, -0.5, 0, 0, 0 }
    expect(x:maximum(0)):eq { 0, 0, 0, 1, 4 }
    expect(x:minimum(T { 0, 0, 0, 0, 0 })):eq { -2, -0.5, 0, 0, 0 }
    raises(function() x:clamp() end, "lo or hi")
  end)
  it("comparisons give 0/1; int64 operands give float32", function()
    expect(x:gt(0)):eq { 0, 0, 0, 1, 1 }
    expect(x:ge(0)):eq { 0, 0, 1, 1, 1 }
    expect(x:lt(0)):eq { 1, 1, 0, 0, 0 }
    expect(x:le(0)):eq { 1, 1, 1, 0, 0 }
    expect(x:eq(1)):eq { 0, 0, 0, 1, 0 }
    expect(x:ne(1)):eq { 1, 1, 1, 0, 1 }
    local e = L { 1, 2, 3 }:eq(L { 1, 0, 3 })
    expect(e):eq { 1, 0, 1 }
    expect(e:dtype()):is "float32"
  end)
  it("where and masked_fill", function()
    local m = x:gt(0)
    expect(wb.where(m, x, 0)):eq { 0, 0, 0, 1, 4 }
    expect(wb.where(m, 1, x)):eq { -2, -0.5, 0, 1, 1 }
    expect(x:where(m, -1)):eq { -1, -1, -1, 1, 4 }
    expect(x:masked_fill(m, 9)):eq { -2, -0.5, 0, 9, 9 }
    raises(function() x:masked_fill(T { 1, 0 }, 1) end, "masked_fill")
  end)
  it("int64 input to a float op is a dtype error", function()
    raises(function() L { 1 }:exp() end, "exp", "int64")
  end)
end)

describe("reductions", function()
  local x = T { { 1, 5, 3 }, { 4, 2, 6 } }
  it("sum and mean: all, 1-based dim, negative dim, keepdim, dim lists", function()
    expect(x:sum()):eq(21)
    expect(x:sum(1)):eq { 5, 7, 9 }
    expect(x:sum(2)):eq { 9, 12 }
    expect(x:sum(-1)):eq { 9, 12 }
    expect(x:sum(-2)):eq { 5, 7, 9 }
    expect(x:sum(2, true):shape()):eq { 2, 1 }
    expect(x:sum({ 1, 2 })):eq(21)
    expect(x:sum(nil, true):shape()):eq { 1, 1 }
    expect(x:mean()):near(3.5)
    expect(x:mean(1)):near { 2.5, 3.5, 4.5 }
    expect(wb.sum(x, 2)):eq { 9, 12 }
    expect(x:sum_to_size { 1, 3 }):eq { { 5, 7, 9 } }
    expect(x:sum_to_size { 2, 1 }):eq { { 9 }, { 12 } }
    expect(x:sum_to_size { 3 }):eq { 5, 7, 9 }
    raises(function() x:sum_to_size { 4 } end, "sum_to_shape", "(2, 3)")
  end)
  it("var with correction", function()
    expect(T { 1, 2, 3, 4 }:var()):near(5 / 3)
    expect(T { 1, 2, 3, 4 }:var(1, false, { correction = 0 })):near(1.25)
    expect(x:var(2)):near { 4, 4 }
    raises(function() x:var(1, false, { ddof = 1 }) end, "unknown option", "correction")
  end)
  it("max/min: value without dim; values and 0-based indices with dim", function()
    expect(x:max()):eq(6)
    expect(x:min()):eq(1)
    local v, i = x:max(2)
    expect(v):eq { 5, 6 }
    expect(i):eq { 1, 2 }
    expect(i:dtype()):is "int64"
    v, i = x:min(1, true)
    expect(v):eq { { 1, 2, 3 } }
    expect(i):eq { { 0, 1, 0 } }
  end)
  it("argmax/argmin are 0-based; without dim they index the flattened tensor", function()
    expect(x:argmax(2)):eq { 1, 2 }
    expect(x:argmin(-1)):eq { 0, 1 }
    expect(x:argmax()):eq(5)
    expect(x:argmin()):eq(0)
    expect(x:argmax(1, true):shape()):eq { 1, 3 }
  end)
  it("softmax and log_softmax", function()
    local s = x:softmax(2)
    expect(s:sum(2)):near { 1, 1 }
    expect(x:log_softmax(2):exp()):near(s)
    expect(x:softmax()):near(s) -- the last dim by default
    expect(x:softmax(1):sum(1)):near { 1, 1, 1 }
  end)
  it("topk, sort, argsort", function()
    local v, i = x:topk(2, 2)
    expect(v):eq { { 5, 3 }, { 6, 4 } }
    expect(i):eq { { 1, 2 }, { 2, 0 } }
    v, i = x:topk(1, 1, { largest = false })
    expect(v):eq { { 1, 2, 3 } }
    expect(i):eq { { 0, 1, 0 } }
    v, i = T { 3, 1, 2 }:sort()
    expect(v):eq { 1, 2, 3 }
    expect(i):eq { 1, 2, 0 }
    v = T { 3, 1, 2 }:sort(1, true)
    expect(v):eq { 3, 2, 1 }
    expect(T { 3, 1, 2 }:argsort(-1, true)):eq { 0, 2, 1 }
    raises(function() x:topk(5, 2) end, "topk")
  end)
  it("a bad dim is an argument error naming the valid range", function()
    raises(function() x:sum(3) end, "dim 3 out of range", "1..2")
    raises(function() x:softmax(0) end, "dim 0 out of range")
    raises(function() x:max(-3) end, "out of range")
  end)
end)

describe("indexing and joining", function()
  local x = T { { 1, 2, 3 }, { 4, 5, 6 } }
  it("index_select and gather take 0-based index tensors and 1-based dims", function()
    expect(x:index_select(2, L { 2, 0 })):eq { { 3, 1 }, { 6, 4 } }
    expect(x:index_select(1, L { 1 })):eq { { 4, 5, 6 } }
    expect(x:gather(2, L { { 0 }, { 2 } })):eq { { 1 }, { 6 } }
    raises(function() x:index_select(2, L { 3 }) end, "index_select", "3")
    raises(function() x:index_select(2, T { 1 }) end, "int64")
  end)
  it("scatter_add", function()
    local z = wb.zeros { 2, 3 }
    local r = z:scatter_add(2, L { { 0, 0 }, { 2, 1 } }, T { { 1, 2 }, { 3, 4 } })
    expect(r):eq { { 3, 0, 0 }, { 0, 4, 3 } }
  end)
  it("one_hot of 0-based labels", function()
    expect(L { 0, 2 }:one_hot(3)):eq { { 1, 0, 0 }, { 0, 0, 1 } }
    expect(wb.one_hot(L { 1 }, 2)):eq { { 0, 1 } }
    raises(function() L { 3 }:one_hot(3) end, "one_hot")
  end)
  it("cat, stack and split", function()
    expect(wb.cat { x, x }:shape()):eq { 4, 3 }
    expect(wb.cat({ x, x }, 2):shape()):eq { 2, 6 }
    expect(wb.cat({ x, x }, -1):shape()):eq { 2, 6 }
    expect(wb.stack { x, x }:shape()):eq { 2, 2, 3 }
    expect(wb.stack({ x, x }, 3):shape()):eq { 2, 3, 2 }
    expect(wb.stack({ x, x }, -1):shape()):eq { 2, 3, 2 }
    local p = x:split(2, 2)
    expect(#p):is(2)
    expect(p[1]):eq { { 1, 2 }, { 4, 5 } }
    expect(p[2]):eq { { 3 }, { 6 } }
    p = x:split({ 1, 2 }, 2)
    expect(p[2]):eq { { 2, 3 }, { 5, 6 } }
    raises(function() wb.cat {} end, "empty")
    raises(function() wb.cat { x, 1 } end, "entry 2")
    raises(function() wb.cat { x, T { 1 } } end, "concat")
    raises(function() x:split({ 1, 1 }, 2) end, "split")
  end)
end)

describe("views", function()
  local x = T { { 1, 2, 3 }, { 4, 5, 6 } }
  it("reshape, view (-1 infers), transpose, t, permute", function()
    expect(x:reshape { 3, 2 }):eq { { 1, 2 }, { 3, 4 }, { 5, 6 } }
    expect(x:reshape(3, -1):shape()):eq { 3, 2 }
    expect(x:view { 6 }):eq { 1, 2, 3, 4, 5, 6 }
    expect(x:transpose(1, 2)):eq { { 1, 4 }, { 2, 5 }, { 3, 6 } }
    expect(x:t()):eq(x:transpose(1, 2))
    local y = wb.zeros { 2, 3, 4 }
    expect(y:permute(3, 1, 2):shape()):eq { 4, 2, 3 }
    expect(y:permute { -1, 1, 2 }:shape()):eq { 4, 2, 3 }
    raises(function() x:t():view { 6 } end, "view")
    raises(function() y:permute(1, 2) end, "permute needs 3 dims")
  end)
  it("narrow and slice use 1-based positions", function()
    expect(x:narrow(2, 2, 2)):eq { { 2, 3 }, { 5, 6 } }
    expect(x:narrow(1, 2, 1)):eq { { 4, 5, 6 } }
    expect(x:narrow(2, -1, 1)):eq { { 3 }, { 6 } }
    expect(x:slice(2, 2)):eq { { 2, 3 }, { 5, 6 } }
    expect(x:slice(2, 1, 2)):eq { { 1, 2 }, { 4, 5 } }
    expect(x:slice(2, 1, -1, 2)):eq { { 1, 3 }, { 4, 6 } }
    expect(x:slice(2, -2, -1)):eq { { 2, 3 }, { 5, 6 } }
    expect(x:slice(2, 3, 2):shape()):eq { 2, 0 }
    raises(function() x:narrow(2, 5, 1) end, "out of range")
    raises(function() x:narrow(2, 2, 5) end, "narrow")
  end)
  it("expand, unsqueeze, squeeze, flatten", function()
    local c = T { { 1 }, { 2 } }
    expect(c:expand { 2, 3 }):eq { { 1, 1, 1 }, { 2, 2, 2 } }
    expect(c:expand { -1, 2 }):eq { { 1, 1 }, { 2, 2 } }
    expect(x:unsqueeze(1):shape()):eq { 1, 2, 3 }
    expect(x:unsqueeze(3):shape()):eq { 2, 3, 1 }
    expect(x:unsqueeze(-1):shape()):eq { 2, 3, 1 }
    expect(wb.zeros { 1, 2, 1 }:squeeze():shape()):eq { 2 }
    expect(wb.zeros { 1, 2, 1 }:squeeze(3):shape()):eq { 1, 2 }
    expect(wb.zeros { 2, 3, 4 }:flatten():shape()):eq { 24 }
    expect(wb.zeros { 2, 3, 4 }:flatten(2):shape()):eq { 2, 12 }
    expect(wb.zeros { 2, 3, 4 }:flatten(1, 2):shape()):eq { 6, 4 }
    raises(function() x:squeeze(1) end, "squeeze")
  end)
  it("contiguous, clone, detach; views share storage", function()
    local t = x:t()
    expect(t:is_contiguous()):is(false)
    expect(t:contiguous():is_contiguous()):is(true)
    local v = x:clone()
    local w = v:view { 6 }
    w:fill_(0)
    expect(v:sum()):eq(0)
    expect(x:sum()):eq(21)
    local r = wb.ones { 2 }:requires_grad(true)
    expect((r * 2):detach():requires_grad()):is(false)
  end)
end)

describe("in-place", function()
  it("fill_, zero_, copy_, add_, mul_, uniform_, normal_, bernoulli_", function()
    local x = wb.zeros { 3 }
    expect(x:fill_(2)):eq { 2, 2, 2 }
    x:add_(T { 1, 2, 3 })
    expect(x):eq { 3, 4, 5 }
    x:add_(T { 1, 1, 1 }, -2)
    expect(x):eq { 1, 2, 3 }
    x:add_(1)
    expect(x):eq { 2, 3, 4 }
    x:mul_(2)
    expect(x):eq { 4, 6, 8 }
    x:mul_(T { 1, 0, 1 })
    expect(x):eq { 4, 0, 8 }
    x:copy_(T { 7 })
    expect(x):eq { 7, 7, 7 }
    expect(x:zero_()):eq { 0, 0, 0 }
    local u = wb.zeros { 500 }:uniform_(2, 3)
    expect(u:min():item()):ge(2)
    expect(u:max():item()):lt(3)
    expect(wb.zeros { 2000 }:normal_(5, 0.1):mean():item()):near(5, 0.01)
    expect(wb.zeros { 10 }:bernoulli_(1):sum():item()):is(10.0)
  end)
end)

describe("autograd", function()
  it("y = sum(x * x); dy/dx = 2x", function()
    local x = T { 1, -2, 3 }:requires_grad(true)
    expect(x:requires_grad()):is(true)
    local y = (x * x):sum()
    y:backward()
    expect(x:grad()):eq { 2, -4, 6 }
  end)
  it("gradients accumulate until zero_grad", function()
    local x = T { 1, 2 }:requires_grad(true)
    ;(x * 3):sum():backward()
    ;(x * 3):sum():backward()
    expect(x:grad()):eq { 6, 6 }
    x:zero_grad()
    expect(x:grad()):eq { 0, 0 }
    x:zero_grad(true)
    expect(x:grad()):is(nil)
  end)
  it("backward with an explicit gradient; chains of ops", function()
    local x = T { 0.5, 1.0 }:requires_grad(true)
    local y = x:exp() * x
    y:backward(T { 1, 1 })
    expect(x:grad()):near { math.exp(0.5) * 1.5, math.exp(1) * 2 }
    local w = T { { 1, 2 }, { 3, 4 } }:requires_grad(true)
    local v = T { { 1 }, { 1 } }
    w:matmul(v):sum():backward()
    expect(w:grad()):eq { { 1, 1 }, { 1, 1 } }
  end)
  it("softmax, gather and views carry gradients", function()
    local x = T { { 1, 2, 3 } }:requires_grad(true)
    local p = x:log_softmax(2):gather(2, L { { 2 } })
    p:sum():backward()
    local s = x:detach():softmax(2)
    expect(x:grad()):near((s * -1 + T { { 0, 0, 1 } }))
  end)
  it("errors: backward of a non-scalar, twice through a freed graph, grad on int64", function()
    local x = T { 1, 2 }:requires_grad(true)
    raises(function() (x * 2):backward() end, "backward")
    local y = (x * x):sum()
    y:backward()
    raises(function() y:backward() end, "backward")
    raises(function() L { 1 }:requires_grad(true) end, "int64")
    raises(function() (x * 2):requires_grad(false) end, "leaf")
  end)
  it("no_grad restores the mode, even when the function errors", function()
    local x = T { 1 }:requires_grad(true)
    local r, extra = wb.no_grad(function(a) return (x * a):requires_grad(), a end, 2)
    expect(r):is(false)
    expect(extra):is(2)
    expect(wb.is_grad_enabled()):is(true)
    raises(function() wb.no_grad(function() error("inside") end) end, "inside")
    expect(wb.is_grad_enabled()):is(true)
    expect(wb.set_grad_enabled(false)):is(true)
    expect((x * 2):requires_grad()):is(false)
    expect(wb.set_grad_enabled(true)):is(false)
    expect((x * 2):requires_grad()):is(true)
  end)
end)

describe("misc", function()
  it("memory_kb reports resident memory", function()
    local m = wb.memory_kb()
    expect(m):type "number"
    expect(m):gt(1000)
  end)
  it("argument errors name the argument", function()
    raises(function() wb.zeros { 2 }:sum("x") end, "bad argument")
    raises(function() wb.matmul(1, 2) end, "bad argument #1", "tensor expected")
    raises(function() wb.zeros { 2 }:reshape { 1.5 } end, "integers")
  end)
  it("a closed tensor is an error, not a crash", function()
    local x = wb.zeros { 2 }
    getmetatable(x).__close(x)
    raises(function() return x + 1 end, "closed")
    expect(tostring(x)):is "tensor(closed)"
  end)
end)

spec.finish()
