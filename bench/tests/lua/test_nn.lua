-- bench/tests/lua/test_nn.lua: wb.nn from Lua: layer constructors and PyTorch layouts, the layer
-- registry, module methods, functional ops and losses, and a small model trained to a stated
-- accuracy.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises
local nn = wb.nn

wb.set_num_threads(1)

local function T(t) return wb.tensor(t) end
local function L(t) return wb.tensor(t, { dtype = "int64" }) end

describe("layers", function()
  it("Linear: weight (out, in) then bias (out), PyTorch's default init bound", function()
    wb.manual_seed(1)
    local m = nn.Linear(4, 3)
    local p = m:parameters()
    expect(#p):is(2)
    expect(p[1]:shape()):eq { 3, 4 }
    expect(p[2]:shape()):eq { 3 }
    expect(p[1]:abs():max():item()):le(0.5) -- U(-1/sqrt(4), 1/sqrt(4))
    expect(p[1]:requires_grad()):is(true)
    local x = wb.randn { 5, 4 }
    expect(m(x)):near(x:matmul(p[1]:t()) + p[2])
    expect(m:forward(x)):near(m(x))
    expect(#nn.Linear(4, 3, { bias = false }):parameters()):is(1)
    expect(m:type()):is "Linear"
  end)
  it("Conv2d: options, pairs, weight layout", function()
    local c = nn.Conv2d(3, 8, 3, { stride = 2, padding = 1 })
    expect(c:parameters()[1]:shape()):eq { 8, 3, 3, 3 }
    expect(c(wb.randn { 2, 3, 9, 9 }):shape()):eq { 2, 8, 5, 5 }
    local g = nn.Conv2d(4, 8, { 3, 1 }, { groups = 2, padding = { 1, 0 }, bias = false })
    expect(g:parameters()[1]:shape()):eq { 8, 2, 3, 1 }
    expect(#g:parameters()):is(1)
    expect(g(wb.randn { 1, 4, 5, 5 }):shape()):eq { 1, 8, 5, 5 }
    local d = nn.Conv2d(1, 1, 3, { dilation = 2 })
    expect(d(wb.randn { 1, 1, 7, 7 }):shape()):eq { 1, 1, 3, 3 }
    raises(function() nn.Conv2d(3, 8, 3, { pad = 1 }) end, "Conv2d", "unknown option \"pad\"", "padding")
    raises(function() nn.Conv2d(3, 8, "x") end, "kernel")
  end)

  it("wb.set_winograd switches 5x5 convolutions between Winograd and direct, returning the previous", function()
    wb.manual_seed(3)
    local c = nn.Conv2d(16, 16, 5, { padding = 2 })
    local x = wb.randn { 2, 16, 8, 8 }
    local prev = wb.set_winograd(true)
    local a = c(x)
    expect(wb.set_winograd(false)):is(true)
    local b = c(x)
    expect(wb.set_winograd(prev)):is(false)
    -- the same convolution up to rounding (both against each other's magnitude)
    expect((a - b):abs():max():item()):lt(1e-4 * b:abs():max():item())
  end)
  it("BatchNorm: parameters, running buffers, train vs eval", function()
    local bn = nn.BatchNorm1d(3)
    expect(#bn:parameters()):is(2)
    local b = bn:named_buffers()
    expect(b.running_mean):eq { 0, 0, 0 }
    expect(b.running_var):eq { 1, 1, 1 }
    expect(#bn:buffers()):is(2)
    local x = T { { 1, 2, 3 }, { 3, 4, 5 } }
    local y = bn(x)
    expect(y:mean(1)):near({ 0, 0, 0 }, 1e-4)
    expect(bn:named_buffers().running_mean):near { 0.2, 0.3, 0.4 }
    bn:evaluate()
    expect(bn:is_training()):is(false)
    local ye = bn(x)
    expect(ye):near((x - T { 0.2, 0.3, 0.4 }) / (bn:named_buffers().running_var + 1e-5):sqrt(), 1e-4)
    local bn2 = nn.BatchNorm2d(2, { momentum = 0.5, eps = 1e-3 })
    expect(bn2(wb.randn { 2, 2, 3, 3 }):shape()):eq { 2, 2, 3, 3 }
    expect(#nn.BatchNorm1d(3, { affine = false }):parameters()):is(0)
  end)
  it("LayerNorm, Dropout, Embedding", function()
    local ln = nn.LayerNorm(4)
    local y = ln(wb.randn { 3, 4 })
    expect(y:mean(2)):near({ 0, 0, 0 }, 1e-5)
    expect(nn.LayerNorm { 2, 4 }:parameters()[1]:shape()):eq { 2, 4 }
    local d = nn.Dropout(0.5)
    local x = wb.ones { 1000 }
    local z = d(x)
    local kept = z:gt(0):sum():item()
    expect(kept):gt(400)
    expect(kept):lt(600)
    expect(z:max():item()):near(2)
    d:eval()
    expect(d(x)):eq(x)
    local e = nn.Embedding(10, 3)
    expect(e:parameters()[1]:shape()):eq { 10, 3 }
    expect(e(L { { 1, 2 } }):shape()):eq { 1, 2, 3 }
    expect(e(L { 4 })):eq(e:parameters()[1]:narrow(1, 5, 1))
    raises(function() nn.Dropout(2) end, "Dropout", "p")
  end)
  it("activations", function()
    local x = T { -1, 0, 2 }
    expect(nn.ReLU()(x)):eq { 0, 0, 2 }
    expect(nn.LeakyReLU(0.5)(x)):eq { -0.5, 0, 2 }
    expect(nn.Tanh()(x)):near(x:tanh())
    expect(nn.Sigmoid()(x)):near(x:sigmoid())
    expect(nn.GELU()(x)):near(x:gelu())
    expect(nn.GELU { approximate = "tanh" }(x)):near(x:gelu { approximate = "tanh" })
    expect(nn.Softplus()(x)):near(x:softplus())
    expect(nn.Softplus(2)(x)):near(x:softplus { beta = 2 })
  end)
  it("pooling and Flatten (1-based dims)", function()
    local x = wb.arange(16):reshape { 1, 1, 4, 4 }
    expect(nn.MaxPool2d(2)(x)):eq { { { { 5, 7 }, { 13, 15 } } } }
    expect(nn.AvgPool2d(2)(x)):eq { { { { 2.5, 4.5 }, { 10.5, 12.5 } } } }
    expect(nn.MaxPool2d(3, { stride = 1, padding = 1 })(x):shape()):eq { 1, 1, 4, 4 }
    expect(nn.GlobalAvgPool2d()(x)):eq { { 7.5 } }
    expect(nn.Flatten()(wb.zeros { 2, 3, 4 }):shape()):eq { 2, 12 }
    expect(nn.Flatten(1)(wb.zeros { 2, 3, 4 }):shape()):eq { 24 }
    expect(nn.Flatten(2, 2)(wb.zeros { 2, 3, 4 }):shape()):eq { 2, 3, 4 }
    raises(function() nn.Flatten(0) end, "1-based")
  end)
  it("Sequential and Residual: names, order, children", function()
    local m = nn.Sequential { nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1) }
    local names = {}
    for k in pairs(m:named_parameters()) do names[#names + 1] = k end
    table.sort(names)
    expect(names):eq { "0.bias", "0.weight", "2.bias", "2.weight" }
    local p = m:parameters()
    expect(p[1]:shape()):eq { 4, 2 }
    expect(p[2]:shape()):eq { 4 }
    expect(p[3]:shape()):eq { 1, 4 }
    expect(#m:children()):is(3)
    expect(m:children()[2]:type()):is "ReLU"
    expect(m:named_children()["2"]:type()):is "Linear"
    expect(m:num_params()):is(4 * 2 + 4 + 4 + 1)
    local v = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    expect(#v:children()):is(2)
    local r = nn.Residual(nn.Linear(3, 3))
    local x = wb.randn { 2, 3 }
    expect(r(x)):near(r:children()[1](x) + x)
    local rs = nn.Residual(nn.Linear(3, 2), nn.Linear(3, 2))
    expect(rs(x):shape()):eq { 2, 2 }
    raises(function() nn.Sequential { nn.ReLU(), 3 } end, "entry 2", "not a module")
  end)
  it("train/evaluate/eval set the mode recursively and return the module", function()
    local m = nn.Sequential { nn.Dropout(0.5), nn.Sequential { nn.Dropout(0.5) } }
    expect(m:evaluate()):is(m)
    expect(m:children()[2]:children()[1]:is_training()):is(false)
    expect(m:train()):is(m)
    expect(m:children()[2]:is_training()):is(true)
    m:train(false)
    expect(m:is_training()):is(false)
    m:eval()
    expect(m:is_training()):is(false)
  end)
  it("zero_grad and flat buffers", function()
    local m = nn.Sequential { nn.Linear(3, 2), nn.Linear(2, 1) }
    m(wb.randn { 4, 3 }):sum():backward()
    expect(m:parameters()[1]:grad():abs():sum():item()):gt(0)
    m:zero_grad(false)
    expect(m:parameters()[1]:grad():abs():sum():item()):is(0.0)
    m:zero_grad()
    expect(m:parameters()[1]:grad()):is(nil)
    local p, g = m:flat()
    expect(p:numel()):is(m:num_params())
    expect(g:numel()):is(m:num_params())
    -- the parameters now view the flat vector: writing it changes them
    p:fill_(0.5)
    expect(m:parameters()[3]):eq { { 0.5, 0.5 } }
    m(wb.ones { 1, 3 }):sum():backward()
    expect(g:abs():sum():item()):gt(0)
    m:zero_grad() -- flat grads are zeroed in place even though the default drops grads
    expect(g:abs():sum():item()):is(0.0)
    expect(m:parameters()[1]:grad() ~= nil):is(true)
  end)
  it("stats: per-layer shapes, FLOPs and parameter counts", function()
    local m = nn.Sequential { nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2) }
    local s = m:stats { 8, 3, 4 }
    expect(#s):is(4)
    expect(s[2].name):is "1"
    expect(s[2].type):is "Linear"
    expect(s[2].shape):eq { 8, 5 }
    expect(s[2].params):is(65)
    expect(s[2].flops):is(2 * 8 * 12 * 5)
    expect(s.total.params):is(m:num_params())
    expect(s.total.shape):eq { 8, 2 }
    expect(m:summary { 8, 3, 4 }):matches "Linear"
    raises(function() m:stats { 8, 5 } end, "Linear")
  end)
  it("tostring is a readable summary", function()
    local m = nn.Sequential { nn.Linear(2, 3), nn.ReLU() }
    local s = tostring(m)
    expect(s):matches "Sequential("
    expect(s):matches "(0): Linear(in=2, out=3, bias=true)"
    expect(s):matches "(1): ReLU()"
    expect(s):matches "9 parameters"
  end)
end)

describe("registry", function()
  it("wb.nn.layer builds any registered type with its options", function()
    local m = nn.layer("Linear", { ["in"] = 3, out = 2, bias = false })
    expect(m:type()):is "Linear"
    expect(#m:parameters()):is(1)
    local names = nn.layers()
    local seen = {}
    for _, n in ipairs(names) do seen[n] = true end
    expect(seen.Linear and seen.Conv2d and seen.Dropout):truthy()
  end)
  it("wb.nn.<Name> resolves registered names through __index", function()
    expect(rawget(nn, "Linear")):type "function"
    local index = getmetatable(nn).__index
    local ctor = index(nn, "Linear") -- the registry's constructor, not the explicit one
    expect(ctor { ["in"] = 2, out = 5 }:parameters()[1]:shape()):eq { 5, 2 }
  end)
  it("unknown layers and options are errors listing the known ones", function()
    raises(function() return nn.Transformer end, "Transformer", "known layer types", "Linear", "Conv2d")
    raises(function() nn.layer("Nope") end, "unknown layer type \"Nope\"", "Linear")
    raises(function() nn.layer("Linear", { ["in"] = 2, out = 2, width = 3 }) end, "unknown option \"width\"", "in, out, bias")
    raises(function() nn.Linear(2, 2, { bais = true }) end, "unknown option \"bais\"", "bias")
    raises(function() nn.Linear(2, 2, { true }) end, "Linear", "options are named")
  end)
  it("argument errors name the argument", function()
    raises(function() nn.Linear("a", 2) end, "bad argument #1", "number expected")
    raises(function() nn.Linear(2, 3)(5) end, "bad argument", "tensor expected")
    raises(function() nn.Linear(2, 3)(T { 1, 2, 3 }) end, "linear", "weight (3, 2)")
  end)
end)

describe("functional", function()
  local logits = T { { 2, 1, 0 }, { 0, 0, 3 } }
  local y = L { 0, 2 }
  it("cross_entropy equals -log_softmax at the label; reductions", function()
    local lp = logits:log_softmax(2)
    local per = { -lp:totable()[1][1], -lp:totable()[2][3] }
    expect(nn.cross_entropy(logits, y)):near((per[1] + per[2]) / 2)
    expect(nn.cross_entropy(logits, y, { reduction = "sum" })):near(per[1] + per[2])
    expect(nn.cross_entropy(logits, y, { reduction = "none" })):near(per)
    expect(nn.nll_loss(lp, y)):near(nn.cross_entropy(logits, y))
    raises(function() nn.cross_entropy(logits, y, { reduction = "avg" }) end, "unknown reduction", "mean, sum, none")
    raises(function() nn.cross_entropy(logits, L { 0, 3 }) end, "cross_entropy", "3")
    raises(function() nn.cross_entropy(logits, L { 0 }) end, "cross_entropy", "(2, 3)")
  end)
  it("cross_entropy with soft targets (float, logits' shape)", function()
    local t = T { { 1, 0, 0 }, { 0, 0, 1 } }
    expect(nn.cross_entropy(logits, t)):near(nn.cross_entropy(logits, y))
    local u = T { { 0.5, 0.5, 0 }, { 0, 0, 1 } }
    local lp = logits:log_softmax(2):totable()
    expect(nn.cross_entropy(logits, u, { reduction = "none" })):near { -(lp[1][1] + lp[1][2]) / 2, -lp[2][3] }
  end)
  it("mse_loss", function()
    expect(nn.mse_loss(T { 1, 2 }, T { 0, 0 })):near(2.5)
    expect(nn.mse_loss(T { 1, 2 }, T { 0, 0 }, { reduction = "sum" })):near(5)
    raises(function() nn.mse_loss(T { 1, 2 }, T { 1 }) end, "mse")
  end)
  it("gradients of the losses reach the logits", function()
    local x = logits:clone():requires_grad(true)
    nn.cross_entropy(x, y):backward()
    local expected = (logits:softmax(2) - y:one_hot(3)) / 2
    expect(x:grad()):near(expected)
  end)
  it("softmax, relu, gelu shared with the tensor methods", function()
    expect(nn.softmax(logits, 2)):near(logits:softmax(2))
    expect(nn.log_softmax(logits, -1)):near(logits:log_softmax(-1))
    expect(nn.relu(T { -1, 1 })):eq { 0, 1 }
    expect(nn.gelu(T { 1 })):near(T { 1 }:gelu())
  end)
  it("dropout (training use) and dropout_mask", function()
    local x = wb.ones { 2000 }
    local d = nn.dropout(x, 0.25)
    local frac = d:gt(0):mean():item()
    expect(frac):near(0.75, 0.1)
    expect(d:max():item()):near(1 / 0.75)
    expect(nn.dropout(x, 0.25, { training = false })):eq(x)
    expect(nn.dropout_mask(T { 1, 2, 3 }, T { 1, 0, 1 }, 2)):eq { 2, 0, 6 }
    raises(function() nn.dropout(x, 1.5) end, "p must be in [0, 1]")
  end)
  it("linear, conv2d, pools, batch_norm, layer_norm, embedding agree with the layers", function()
    local lin = nn.Linear(3, 2)
    local x = wb.randn { 4, 3 }
    local w, b = table.unpack(lin:parameters())
    expect(nn.linear(x, w, b)):near(lin(x))
    expect(nn.linear(x, w)):near(lin(x) - b)
    local conv = nn.Conv2d(2, 3, 3, { padding = 1 })
    local cw, cb = table.unpack(conv:parameters())
    local img = wb.randn { 1, 2, 5, 5 }
    expect(nn.conv2d(img, cw, cb, { padding = 1 })):near(conv(img), 1e-4)
    expect(nn.conv2d(img, cw, { padding = 1 }):shape()):eq { 1, 3, 5, 5 }
    expect(nn.max_pool2d(img, 2)):near(nn.MaxPool2d(2)(img))
    expect(nn.avg_pool2d(img, 2, { stride = 1 }):shape()):eq { 1, 2, 4, 4 }
    expect(nn.global_avg_pool2d(img)):near(img:mean { 3, 4 })
    local rm, rv = wb.zeros { 2 }, wb.ones { 2 }
    expect(nn.batch_norm(img, rm, rv)):near(img / math.sqrt(1 + 1e-5), 1e-5)
    local bt = nn.batch_norm(img, rm, rv, { training = true, momentum = 1 })
    expect(bt:mean { 1, 3, 4 }):near({ 0, 0 }, 1e-4)
    expect(rm):near(img:mean { 1, 3, 4 }, 1e-5)
    expect(nn.layer_norm(x, 3):mean(2)):near({ 0, 0, 0, 0 }, 1e-5)
    expect(nn.layer_norm(x, { 3 }, { weight = wb.full({ 3 }, 2), bias = wb.ones { 3 } }):mean(2)):near({ 1, 1, 1, 1 }, 1e-5)
    local ew = wb.randn { 5, 2 }
    expect(nn.embedding(L { 3, 0 }, ew)):eq(ew:index_select(1, L { 3, 0 }))
    expect(nn.one_hot(L { 1 }, 3)):eq { { 0, 1, 0 } }
    raises(function() nn.conv2d(img, cw, cb, { strides = 1 }) end, "unknown option \"strides\"")
    raises(function() nn.conv2d(wb.randn { 1, 3, 5, 5 }, cw, cb) end, "conv2d", "(1, 3, 5, 5)")
  end)
  it("init schemes by name", function()
    local t = wb.zeros { 64, 32 }
    nn.init(t, "kaiming_normal")
    expect(t:var():item()):near(2 / 32, 0.2)
    nn.init(t, "uniform", { a = 0.1 })
    expect(t:abs():max():item()):le(0.1)
    nn.init(t, "zeros")
    expect(t:abs():sum():item()):is(0.0)
    raises(function() nn.init(t, "orthogonal") end, "unknown init scheme \"orthogonal\"", "kaiming_normal", "xavier_uniform")
  end)
end)

describe("training", function()
  it("an MLP learns two moons to >= 95% validation accuracy", function()
    wb.manual_seed(3)
    local ds = wb.data.two_moons { n = 600, noise = 0.1, seed = 7 }
    local train, val = ds:split(200, { seed = 1 })
    local model = nn.Sequential { nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2) }
    local opt = wb.optim.Adam(model:parameters(), { lr = 0.02 })
    local first, last
    for epoch = 1, 40 do
      model:train()
      local sum, n = 0, 0
      for x, y in train:batches { size = 32, shuffle = true, seed = 11 } do
        local loss = nn.cross_entropy(model(x), y)
        opt:zero_grad()
        loss:backward()
        opt:step()
        sum, n = sum + loss:item(), n + 1
      end
      first = first or sum / n
      last = sum / n
    end
    expect(last):lt(first / 5)
    model:train()
    local acc = wb.metrics.accuracy(model, val)
    expect(acc):ge(0.95)
    expect(model:is_training()):is(true) -- accuracy restores the mode it found
    expect(wb.metrics.nll(model, val)):lt(0.2)
  end)
end)

spec.finish()
