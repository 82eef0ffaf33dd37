-- bench/tests/lua/test_data.lua: wb.data (synthetic sets, datasets, splits, batching with
-- per-epoch shuffles, augmentations, corruptions, Fashion-MNIST) and wb.metrics from Lua.
local wb = require "wb"
local spec = require "spec"
local describe, it, expect, raises = spec.describe, spec.it, spec.expect, spec.raises
local data, nn = wb.data, wb.nn

wb.set_num_threads(1)

local function L(t) return wb.tensor(t, { dtype = "int64" }) end

-- All labels of a dataset's batches, in order, as a Lua list; and the batch sizes.
local function epoch(ds, opts)
  local ys, sizes = {}, {}
  for x, y in ds:batches(opts) do
    sizes[#sizes + 1] = x:shape(1)
    expect(y:shape(1)):is(x:shape(1))
    for _, v in ipairs(y:totable()) do ys[#ys + 1] = v end
  end
  return ys, sizes
end

describe("synthetic sets", function()
  it("two_moons: shapes, 0-based balanced labels, seeded", function()
    local ds = data.two_moons { n = 101, noise = 0.05, seed = 3 }
    expect(ds:size()):is(101)
    expect(#ds):is(101)
    expect(ds:n_classes()):is(2)
    expect(ds:x():shape()):eq { 101, 2 }
    expect(ds:y():dtype()):is "int64"
    expect(ds:class_counts()):eq { 51, 50 }
    expect(ds:y():min():item()):is(0)
    expect(data.two_moons { n = 101, noise = 0.05, seed = 3 }:x()):eq(ds:x())
    expect(spec.same(data.two_moons { n = 101, noise = 0.05, seed = 4 }:x(), ds:x())):is(false)
    expect(tostring(ds)):matches "n=101"
  end)
  it("blobs and regression1d", function()
    local b = data.blobs { n = 30, k = 3, d = 4, std = 0.1, seed = 1 }
    expect(b:x():shape()):eq { 30, 4 }
    expect(b:n_classes()):is(3)
    expect(b:class_counts()):eq { 10, 10, 10 }
    local r = data.regression1d { n = 50, lo = -1, hi = 1, noise = 0, seed = 2 }
    expect(r:n_classes()):is(0)
    local x = r:x():totable()
    local y = r:y():totable()
    expect(y[1][1]):near(math.sin(3 * x[1][1]), 1e-5)
    expect(r:x():min():item()):ge(-1)
    raises(function() data.blobs { n = 10, classes = 3 } end, "blobs", "unknown option \"classes\"", "n, k, d, std, seed")
    raises(function() data.two_moons { n = -1 } end, "two_moons")
  end)
  it("wb.data.dataset wraps tensors and checks labels", function()
    local ds = data.dataset(wb.randn { 4, 3 }, L { 0, 1, 2, 1 }, { n_classes = 3 })
    expect(ds:class_counts()):eq { 1, 2, 1 }
    raises(function() data.dataset(wb.randn { 4, 3 }, L { 0, 1, 5, 1 }, { n_classes = 3 }) end, "5")
    raises(function() data.dataset(wb.randn { 4, 3 }, L { 0, 1 }, { n_classes = 3 }) end, "(4, 3)")
  end)
end)

describe("subsets", function()
  local ds = data.dataset(wb.arange(20):reshape { 10, 2 }, L { 0, 1, 2, 0, 1, 2, 0, 1, 2, 0 }, { n_classes = 3 })
  it("split: sizes, disjoint, seeded, stratified", function()
    local tr, va = ds:split(4, { seed = 1 })
    expect(tr:size()):is(6)
    expect(va:size()):is(4)
    local seen = {}
    for _, d in ipairs { tr, va } do
      for _, row in ipairs(d:x():totable()) do
        expect(seen[row[1]]):is(nil)
        seen[row[1]] = true
      end
    end
    local _, va2 = ds:split(4, { seed = 1 })
    expect(va2:x()):eq(va:x())
    local _, vs = ds:split(3, { seed = 5, stratified = true })
    expect(vs:class_counts()):eq { 1, 1, 1 }
    raises(function() ds:split(11) end, "split")
  end)
  it("subset takes 0-based indices; classes and kshot", function()
    local s = ds:subset(L { 0, 9, 0 })
    expect(s:y()):eq { 0, 0, 0 }
    expect(s:x()):eq { { 0, 1 }, { 18, 19 }, { 0, 1 } }
    raises(function() ds:subset { 1, 2 } end, "int64 tensor", "0-based")
    raises(function() ds:subset(L { 10 }) end, "10")
    local c = ds:classes({ 2, 1 }, { relabel = true })
    expect(c:size()):is(6)
    expect(c:n_classes()):is(2)
    expect(c:y()):eq { 1, 0, 1, 0, 1, 0 }
    expect(ds:classes { 2 }:y()):eq { 2, 2, 2 }
    local k = ds:kshot(2, { seed = 3 })
    expect(k:class_counts()):eq { 2, 2, 2 }
    expect(ds:kshot(2, { seed = 3 }):x()):eq(k:x())
    raises(function() ds:kshot(4) end, "kshot")
  end)
  it("stats and normalize", function()
    local img = data.dataset(wb.rand { 20, 2, 3, 3 }, L { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1 }, { n_classes = 2 })
    local mean, std = img:stats()
    expect(mean:shape()):eq { 2 }
    local n = img:normalize()
    local m2, s2 = n:stats()
    expect(m2):near({ 0, 0 }, 1e-4)
    expect(s2):near({ 1, 1 }, 1e-4)
    expect(img:normalize(mean, std):x()):near(n:x())
    expect(img:normalize({ 0.5, 0.5 }, 0.5):x()):near((img:x() - 0.5) / 0.5)
    expect(data.normalize(img:x(), 0.5, 0.5)):near((img:x() - 0.5) / 0.5)
    raises(function() img:normalize({ 0.5 }, { 0.5 }) end, "normalize")
    raises(function() img:normalize(0, 0) end, "std")
  end)
end)

describe("batches", function()
  local ds = data.dataset(wb.arange(10):reshape { 10, 1 }, L { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, { n_classes = 10 })
  it("in order without shuffle; the last batch is smaller unless drop_last", function()
    local ys, sizes = epoch(ds, { size = 4 })
    expect(ys):eq { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }
    expect(sizes):eq { 4, 4, 2 }
    local _, s2 = epoch(ds, { size = 4, drop_last = true })
    expect(s2):eq { 4, 4 }
    for x, y in ds:batches { size = 3 } do
      expect(x:dtype()):is "float32"
      expect(y:dtype()):is "int64"
      expect(x:totable()[1][1]):is(y:totable()[1] + 0.0) -- rows stay paired
    end
  end)
  it("shuffle: every sample once per epoch; epochs differ; reruns repeat them", function()
    local a = data.dataset(ds:x(), ds:y(), { n_classes = 10 })
    local e1 = epoch(a, { size = 3, shuffle = true, seed = 7 })
    local e2 = epoch(a, { size = 3, shuffle = true, seed = 7 })
    local sorted = { table.unpack(e1) }
    table.sort(sorted)
    expect(sorted):eq { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }
    expect(spec.same(e1, e2)):is(false) -- the second call is the next epoch
    local b = data.dataset(ds:x(), ds:y(), { n_classes = 10 })
    expect(epoch(b, { size = 3, shuffle = true, seed = 7 })):eq(e1)
    expect(epoch(b, { size = 5, shuffle = true, seed = 7 })):eq(e2) -- the order does not depend on the size
    expect(spec.same(epoch(b, { size = 3, shuffle = true, seed = 8 }), e1)):is(false)
  end)
  it("without a seed, wb.manual_seed makes the epochs reproducible", function()
    wb.manual_seed(11)
    local a = data.dataset(ds:x(), ds:y(), { n_classes = 10 })
    local a1, a2 = epoch(a, { shuffle = true }), epoch(a, { shuffle = true })
    wb.manual_seed(11)
    local b = data.dataset(ds:x(), ds:y(), { n_classes = 10 })
    expect(epoch(b, { shuffle = true })):eq(a1)
    expect(epoch(b, { shuffle = true })):eq(a2)
    expect(spec.same(a1, a2)):is(false)
  end)
  it("batches in order draw nothing from the global generator (evaluating between epochs changes nothing)", function()
    wb.manual_seed(12)
    local before = wb.rand { 4 }:totable()
    wb.manual_seed(12)
    local fresh = data.dataset(ds:x(), ds:y(), { n_classes = 10 })
    epoch(fresh, { size = 3 })
    expect(wb.rand { 4 }:totable()):eq(before)
  end)
  it("breaking out of the loop is fine; bad options are errors", function()
    local n = 0
    for _ in ds:batches { size = 2 } do
      n = n + 1
      if n == 2 then break end
    end
    expect(n):is(2)
    raises(function() ds:batches { size = 0 } end, "batch_size")
    raises(function() ds:batches { batch_size = 4 } end, "unknown option \"batch_size\"", "size, shuffle, seed, drop_last")
    raises(function() ds:batches { size = "four" } end, "option \"size\"", "integer")
  end)
end)

describe("augmentations and corruptions", function()
  local x = wb.rand { 4, 1, 8, 8 }
  it("hflip, translate, rotate", function()
    expect(data.hflip(data.hflip(x))):eq(x)
    expect(data.hflip(x):narrow(4, 1, 1)):eq(x:narrow(4, 8, 1))
    local t = data.translate(x, 0, 1)
    expect(t:narrow(4, 2, 7)):eq(x:narrow(4, 1, 7))
    expect(t:narrow(4, 1, 1):abs():sum():item()):is(0.0)
    expect(data.rotate(x, 0)):near(x, 1e-6)
  end)
  it("random ones: seeded (same seed, same result) or from the global generator", function()
    local a = data.random_crop(x, 2, { seed = 5 })
    expect(a:shape()):eq { 4, 1, 8, 8 }
    expect(data.random_crop(x, 2, { seed = 5 })):eq(a)
    expect(data.random_crop(x, 0)):eq(x)
    expect(data.random_hflip(x, 1)):eq(data.hflip(x))
    expect(data.random_hflip(x, 0, { seed = 1 })):eq(x)
    wb.manual_seed(4)
    local r1 = data.random_rotate(x, 30)
    wb.manual_seed(4)
    expect(data.random_rotate(x, 30)):eq(r1)
    expect(r1:max():item()):le(1)
    raises(function() data.random_crop(x, 2, { sed = 5 }) end, "unknown option \"sed\"", "seed")
    raises(function() data.random_crop(wb.rand { 8, 8 }, 2) end, "random_crop")
  end)
  it("corrupt by name and severity; unknown names list the known ones", function()
    local names = data.corruptions()
    expect(#names):is(5)
    for _, name in ipairs(names) do
      local c = data.corrupt(x, name, 3, { seed = 1 })
      expect(c:shape()):eq(x:shape())
      expect(c:min():item()):ge(0)
      expect(c:max():item()):le(1)
    end
    expect(data.corrupt(x, "gaussian_noise", 2, { seed = 9 })):eq(data.corrupt(x, "gaussian_noise", 2, { seed = 9 }))
    expect(spec.same(data.corrupt(x, "gaussian_noise", 5, { seed = 9 }), x)):is(false)
    raises(function() data.corrupt(x, "fog", 1) end, "unknown corruption \"fog\"", "gaussian_noise", "pixelate")
    raises(function() data.corrupt(x, "contrast", 6) end, "severity")
  end)
end)

describe("metrics", function()
  it("accuracy of logits against labels", function()
    expect(wb.metrics.accuracy(wb.tensor { { 1, 0 }, { 0, 1 }, { 1, 0 } }, L { 0, 1, 1 })):near(2 / 3)
  end)
  it("accuracy and nll of a model on a dataset; the model's modes are restored", function()
    local ds = data.dataset(wb.tensor { { 1, 0 }, { 0, 1 }, { 1, 0 }, { 0, 1 } }, L { 0, 1, 0, 0 }, { n_classes = 2 })
    local id = nn.Sequential { nn.Dropout(0.9), nn.Flatten() }
    id:train()
    id:children()[2]:eval()
    expect(wb.metrics.accuracy(id, ds, { batch = 3 })):near(0.75)
    expect(id:is_training()):is(true)
    expect(id:children()[1]:is_training()):is(true)
    expect(id:children()[2]:is_training()):is(false)
    local lse = math.log(1 + math.exp(1))
    expect(wb.metrics.nll(id, ds)):near((3 * (lse - 1) + lse) / 4)
    raises(function() wb.metrics.accuracy(id, data.regression1d { n = 4 }) end, "regression")
    raises(function() wb.metrics.accuracy(id, ds, { bacth = 2 }) end, "unknown option \"bacth\"", "batch")
    raises(function() wb.metrics.accuracy(nn.Linear(3, 2), ds) end, "linear")
  end)
end)

describe("fashion_mnist", function()
  it("loads the test split: 10000 images (1, 28, 28) in [0, 1], 10 balanced classes", function()
    local ok, ds = pcall(data.fashion_mnist, { split = "test" })
    if not ok then
      print("skipped: " .. tostring(ds))
      return
    end
    expect(ds:size()):is(10000)
    expect(ds:x():shape()):eq { 10000, 1, 28, 28 }
    expect(ds:class_counts()[1]):is(1000)
    local n = 0
    for x, y in ds:batches { size = 2500 } do
      n = n + 1
      expect(x:shape()):eq { 2500, 1, 28, 28 }
      expect(y:max():item()):le(9)
    end
    expect(n):is(4)
    expect(data.fashion_mnist_class(9)):is "Ankle boot"
  end)
  it("bad splits and directories are errors naming them", function()
    raises(function() data.fashion_mnist { split = "val" } end, "val", "train")
    raises(function() data.fashion_mnist { split = "test", dir = "/nonexistent" } end, "/nonexistent")
    raises(function() data.fashion_mnist { splt = "test" } end, "unknown option \"splt\"", "split, dir")
  end)
end)

spec.finish()
