-- scripts/gyro.lua: gyro dropout and block-wise dropout on Fashion-MNIST, after Lee et al.,
-- "Gyro Dropout: Maximizing Ensemble Effect in Neural Network Training" (MLSys 2022), whose
-- claims are up to +1.93% accuracy over conventional dropout and, block-wise, up to 29.8% faster
-- training. The released models scaled to Fashion-MNIST: an MLP with three hidden layers of 1024
-- units and dropout after each, and a LeNet-style CNN (conv 1-6 5x5 pad 2, pool, conv 6-16 5x5,
-- pool, linear 400-128-96-10) with dropout after its two hidden linear layers. Methods: none,
-- dropout p = 0.5, gyro (sigma, tau) = (256, 16), (1024, 8), (64, 16), block-wise dropout
-- (blocks of --block units) with one block mask per minibatch ("block") and with one per each of
-- 16 row groups ("block16", the grouping of gyro's tau = 16; one mask per minibatch diverged at
-- this learning rate on the MLP), and block-wise gyro (256, 16). SGD momentum 0.9, lr 0.05,
-- batch 128. The hidden layers run in nn.BlockSequential, so block-wise
-- methods compute only the kept blocks (nn/gyro_dropout.h).
--
--   wb run scripts/gyro.lua --profile quick   CI smoke run: MLP 3x256, CNN as above, 2,048
--                                             training, 512 validation and 1,000 test images,
--                                             3 epochs at batch 64, 1 seed, 1 thread: 16 runs
--                                             in about 10-30 s with the report on this 2-core
--                                             machine; writes results/gyro_quick.md
--   wb run scripts/gyro.lua --profile full    the study: 55,000 training, 5,000 validation
--                                             (the last 5,000 training images) and 10,000 test
--                                             images, 10 epochs, 5 seeds: 80 runs; writes
--                                             results/gyro.md. Estimated on this 2-core machine
--                                             (1 thread, idle) from step times of about 30 ms
--                                             (MLP dense dropout, 430 steps per epoch) and 4 ms
--                                             (CNN): about 25 x 10 x 430 x 30 ms = 0.9 h for the
--                                             dense MLPs, 0.3 h for the block-wise ones, 0.2 h
--                                             for the CNNs and evaluation: about 1.4 h; more
--                                             when the machine is shared (the report states the
--                                             measured time). --epochs 20 doubles it.
--   wb run scripts/gyro.lua --help            every option
--
-- A run whose mean training loss of an epoch is not finite has diverged: it stops there and logs
-- train/diverged_epoch (its final accuracy is the diverged network's). A killed run resumes
-- (run:sweep skips finished points), and any gyro run of the same database
-- reuses the points an earlier one finished with the same options (scripts/studylib.lua), so parts
-- of the study (e.g. --methods block16) can run side by side. Logged per run and epoch: train/loss,
-- eval/val_acc, eval/test_acc, time/epoch_s; at the end eval/final_test_acc, eval/best_val_acc,
-- eval/best_test_acc (test accuracy at the epoch of best validation accuracy: the selection never
-- looks at the test set), time/epoch_mean_s. The report is computed from the result store.
local wb = require "wb"
local studylib = require "studylib"
local nn, optim = wb.nn, wb.optim

local opt = wb.args({
  profile = "quick",
  models = "mlp,cnn",
  methods = "none,dropout,gyro256x16,gyro1024x8,gyro64x16,block,block16,blockgyro",
  seeds = 0,
  epochs = 0,
  block = 32,
  p = 0.5,
  lr = 0.05,
  momentum = 0.9,
  batch = 0,
  out = "",
  report_only = false,
  threads = 0,
}, {
  doc = {
    profile = "quick (CI smoke run) or full (the study); options at 0 take the profile's value",
    models = "comma-separated: mlp, cnn",
    methods = "comma-separated: none, dropout, gyro<sigma>x<tau>, block (one block mask per minibatch), " ..
      "block<G> (a block mask per each of G row groups), blockgyro",
    seeds = "seeds 1..N (0: quick 1, full 5)",
    epochs = "training epochs (0: quick 3, full 10)",
    block = "block size of the block-wise methods (16, 32, 64; must divide the hidden widths)",
    p = "drop probability of every dropout method",
    lr = "SGD learning rate",
    momentum = "SGD momentum",
    batch = "minibatch size (0: quick 64, full 128)",
    out = "report path without extension (default results/gyro, or results/gyro_quick)",
    report_only = "train nothing: report the points earlier runs finished and list the missing ones",
    threads = "worker threads (0: quick 1; full: the default)",
  },
})

local PROFILES = {
  quick = { seeds = 1, epochs = 3, batch = 64, train = 2048, val = 512, test = 1000, mlp_hidden = 256 },
  full = { seeds = 5, epochs = 10, batch = 128, train = 55000, val = 5000, test = 10000, mlp_hidden = 1024 },
}
local P = PROFILES[opt.profile]
if not P then error("--profile must be quick or full (got " .. opt.profile .. ")", 0) end
local seeds_n = opt.seeds > 0 and opt.seeds or P.seeds
local epochs = opt.epochs > 0 and opt.epochs or P.epochs
opt.batch = opt.batch > 0 and opt.batch or P.batch
if opt.threads > 0 then wb.set_num_threads(opt.threads) elseif opt.profile == "quick" then wb.set_num_threads(1) end

local function split(text)
  local t = {}
  for s in text:gmatch("[^,]+") do t[#t + 1] = s end
  return t
end
local MODELS, METHODS = split(opt.models), split(opt.methods)
for _, m in ipairs(MODELS) do
  if m ~= "mlp" and m ~= "cnn" then error("unknown model " .. m .. "; known: mlp, cnn", 0) end
end
local function method_info(name)
  if name == "none" or name == "dropout" then return { kind = name } end
  if name == "block" then return { kind = "block", groups = 1 } end
  if name == "blockgyro" then return { kind = "gyro", sigma = 256, tau = 16, block = opt.block } end
  local g = name:match("^block(%d+)$")
  if g and tonumber(g) >= 1 then return { kind = "block", groups = tonumber(g) } end
  local s, t = name:match("^gyro(%d+)x(%d+)$")
  if s then return { kind = "gyro", sigma = tonumber(s), tau = tonumber(t), block = 1 } end
  error("unknown method " .. name .. "; known: none, dropout, gyro<sigma>x<tau>, block, block<groups>, blockgyro", 0)
end
for _, m in ipairs(METHODS) do method_info(m) end

-- ---------------------------------------------------------------- data and models

local all = wb.data.fashion_mnist { split = "train" }
local test = wb.data.fashion_mnist { split = "test" }
local function rows(ds, from, n)
  local idx = {}
  for i = 1, n do idx[i] = from + i - 1 end
  return ds:subset(wb.tensor(idx, { dtype = "int64" }))
end
local n_train = math.min(P.train, all:size() - P.val)
local train_set = rows(all, 0, n_train)
local val = rows(all, all:size() - P.val, P.val) -- the last images: never trained on
test = rows(test, 0, math.min(P.test, test:size()))
local steps_per_epoch = math.ceil(train_set:size() / opt.batch)
local ITERS = epochs * steps_per_epoch

local function dropout(method, width)
  local m = method_info(method)
  if m.kind == "none" then return nil end
  if m.kind == "dropout" then return nn.Dropout(opt.p) end
  if m.kind == "block" then return nn.BlockDropout { p = opt.p, block = opt.block, groups = m.groups } end
  return nn.GyroDropout { p = opt.p, size = width, sigma = m.sigma, tau = m.tau, iters = ITERS, block = m.block }
end

-- hidden widths -> a BlockSequential of Linear, ReLU, dropout, ..., Linear
local function fc(method, widths)
  local layers = {}
  for i = 1, #widths - 1 do
    layers[#layers + 1] = nn.Linear(widths[i], widths[i + 1])
    if i < #widths - 1 then
      layers[#layers + 1] = nn.ReLU()
      layers[#layers + 1] = dropout(method, widths[i + 1])
    end
  end
  return nn.BlockSequential(layers)
end

local function build(model, method)
  if model == "mlp" then
    local h = P.mlp_hidden
    return nn.Sequential { nn.Flatten(), fc(method, { 784, h, h, h, 10 }) }
  end
  return nn.Sequential {
    nn.Conv2d(1, 6, 5, { padding = 2 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), fc(method, { 400, 128, 96, 10 }),
  }
end

local function accuracy(model, ds)
  model:evaluate()
  local correct, n = 0, 0
  wb.no_grad(function()
    for x, y in ds:batches { size = 500 } do
      correct = correct + wb.metrics.accuracy(model(x), y) * y:numel()
      n = n + y:numel()
    end
  end)
  model:train()
  return correct / n
end

local function train_point(p, run)
  wb.manual_seed(p.seed)
  local model = build(p.model, p.method)
  local o = optim.SGD(model:parameters(), { lr = opt.lr, momentum = opt.momentum })
  local train = wb.data.dataset(train_set:x(), train_set:y(), { n_classes = 10 })
  local best_val, best_test, time_sum, step, epochs_run = -1, 0, 0, 0, 0
  local test_acc
  model:train()
  for epoch = 1, epochs do
    local t0, loss_sum, n = wb.time(), 0, 0
    for x, y in train:batches { size = opt.batch, shuffle = true, seed = p.seed * 1000 + epoch } do
      local loss = nn.cross_entropy(model(x), y)
      o:zero_grad()
      loss:backward()
      o:step()
      loss_sum, n, step = loss_sum + loss:item(), n + 1, step + 1
    end
    local epoch_s = wb.time() - t0
    time_sum = time_sum + epoch_s
    local val_acc = accuracy(model, val)
    test_acc = accuracy(model, test)
    if val_acc > best_val then best_val, best_test = val_acc, test_acc end
    local mean_loss = loss_sum / n
    run:log(epoch, { ["train/loss"] = mean_loss, ["eval/val_acc"] = val_acc, ["eval/test_acc"] = test_acc,
      ["time/epoch_s"] = epoch_s })
    epochs_run = epoch
    -- a non-finite loss means the weights are too: the run has diverged and stays so; its
    -- accuracy from here on is a constant guess, so it stops (and says when)
    if mean_loss ~= mean_loss or math.abs(mean_loss) == math.huge then
      run:log(epoch, { ["train/diverged_epoch"] = epoch })
      break
    end
  end
  run:log(epochs, { ["eval/final_test_acc"] = test_acc, ["eval/best_val_acc"] = best_val,
    ["eval/best_test_acc"] = best_test, ["time/epoch_mean_s"] = time_sum / epochs_run })
end

-- ---------------------------------------------------------------- the sweep

local seeds = {}
for i = 1, seeds_n do seeds[i] = i end
local points = wb.grid({ model = MODELS, seed = seeds, method = METHODS }, { order = { "model", "seed", "method" } })
local study_name = opt.profile == "full" and "gyro" or "gyro_quick"
local study <close> = wb.experiment { name = study_name,
  params = { profile = opt.profile, models = opt.models, methods = opt.methods, seeds = seeds_n, epochs = epochs,
    block = opt.block, p = opt.p, lr = opt.lr, momentum = opt.momentum, batch = opt.batch } }
print(string.format("gyro: %s profile, %d runs (%d models x %d seeds x %d methods), %d epochs of %d steps, " ..
  "%d training / %d validation / %d test images, %d threads", opt.profile, #points, #MODELS, seeds_n, #METHODS,
  epochs, steps_per_epoch, train_set:size(), val:size(), test:size(), wb.get_num_threads()))
-- points an earlier gyro run of this database finished with the same options are reused
local KEYS = { "model", "method", "seed", "profile", "epochs", "block", "p", "lr", "momentum", "batch" }
local plan = studylib.plan(study_name, points, {
  keys = function() return KEYS end,
  value = function(p, k)
    if p[k] ~= nil then return p[k] end
    if k == "epochs" then return epochs end
    return opt[k]
  end,
  done = "eval/final_test_acc",
})
if plan.reused > 0 then print(string.format("gyro: %d of %d points reused from earlier runs in %s", plan.reused,
    #points, wb.store.path())) end
local missing = {}
if opt.report_only then
  for _, p in ipairs(plan.todo) do missing[#missing + 1] = string.format("%s %s seed %d", p.model, p.method, p.seed) end
  if #missing > 0 then print(string.format("gyro: --report_only: %d points not run", #missing)) end
  plan.todo = {}
end
local t_start = wb.time()
local result = study:sweep(plan.todo, function(p, run) train_point(p, run) end)
plan.fill(result)
print(string.format("gyro: %d ran, %d reused, %d skipped (already finished), %d failed in %.1f s",
  result.ran, plan.reused, result.skipped, result.failed, wb.time() - t_start))

-- ---------------------------------------------------------------- the report, from the store

local function mean_sd(xs)
  local n, s = #xs, 0
  if n == 0 then return nil end
  for _, x in ipairs(xs) do s = s + x end
  local m, v = s / n, 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, n > 1 and math.sqrt(v / (n - 1)) or 0, n
end

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

-- A run diverged when its last epoch's mean training loss is not finite or above ln(10) * 4
-- (four times the loss of a uniform guess over the 10 classes).
local DIVERGED = 4 * math.log(10)
-- ... or it ended at chance: final test accuracy below 15% (10 classes)
local AT_CHANCE = 0.15

-- stats[model][method] = { final = {...}, best = {...}, time = {...}, diverged = n }; time is each
-- run's median epoch time (robust to the spikes of a shared machine).
local stats = {}
for i, p in ipairs(points) do
  local r = plan.run_ids[i] and wb.store.run(plan.run_ids[i])
  if r and r.status == "FINISHED" and r.metrics["eval/final_test_acc"] then
    stats[p.model] = stats[p.model] or {}
    local s = stats[p.model][p.method] or { final = {}, best = {}, time = {}, diverged = 0 }
    stats[p.model][p.method] = s
    table.insert(s.final, r.metrics["eval/final_test_acc"])
    table.insert(s.best, r.metrics["eval/best_test_acc"])
    local h = wb.store.history(r.id, "time/epoch_s")
    table.insert(s.time, median(h.values) or r.metrics["time/epoch_mean_s"])
    local loss = r.metrics["train/loss"]
    if not loss or loss ~= loss or loss > DIVERGED or r.metrics["eval/final_test_acc"] < AT_CHANCE then
      s.diverged = s.diverged + 1
    end
  end
end

local info = wb.store.run(study:id())
local command = info.tags and info.tags["wb.command"] or ("wb run scripts/gyro.lua --profile " .. opt.profile)
local md = {}
local function add(s) md[#md + 1] = s end
add("# Gyro dropout and block-wise dropout on Fashion-MNIST (wb)\n")
add(string.format("Made by `%s` (study run %d, database %s), git commit %s%s, %s profile, %s.\n", command,
  study:id(), wb.store.path(), info.git_commit or "?", info.git_dirty and " (dirty)" or "", opt.profile,
  os.date("!%Y-%m-%d %H:%M UTC")))
local sources = studylib.sources(plan.run_ids, study:id())
if sources then
  add(string.format("%d of the %d points were reused from earlier gyro runs of this database with the same options: " ..
    "%s.\n", plan.reused, #points, sources))
end
if #missing > 0 then
  add(string.format("**Not run (--report_only): %d of %d points: %s.** Their methods' rows have fewer seeds.\n",
    #missing, #points, table.concat(missing, ", ")))
end
if opt.profile ~= "full" then
  add("**Quick profile: a smoke run of the pipeline on small data and models. Not the study's result.**\n")
end
add(string.format("Setup: MLP 784-%d-%d-%d-10 and LeNet-style CNN (FC 400-128-96-10), dropout p = %g after " ..
  "each hidden layer, block size %d, %d epochs of %d steps at batch %d on %d training images, validation on %d, " ..
  "test on %d, SGD lr %g momentum %g, seeds 1..%d, %d threads. Best-epoch accuracy: test accuracy at the epoch " ..
  "of best validation accuracy. Ratios are against conventional dropout (accuracy: difference in points; time: " ..
  "dropout's time per epoch / the method's).\n", P.mlp_hidden, P.mlp_hidden, P.mlp_hidden, opt.p, opt.block, epochs,
  steps_per_epoch, opt.batch, train_set:size(), val:size(), test:size(), opt.lr, opt.momentum, seeds_n,
  wb.get_num_threads()))
-- a difference of means and whether it stands out from the seeds' noise (two standard errors)
local function versus(x, y)
  local mx, sx, nx = mean_sd(x)
  local my, sy, ny = mean_sd(y)
  local se = 2 * math.sqrt(sx ^ 2 / nx + sy ^ 2 / ny)
  local d = mx - my
  if nx < 2 or ny < 2 then return d, 0, d > 0 and "single+" or "single-" end
  return d, se, math.abs(d) > se and (d > 0 and "better" or "worse") or "tied"
end
local verdict = {}
for _, model in ipairs(MODELS) do
  add(string.format("\n## %s\n", model))
  add("| method | final test acc | best-epoch test acc | s/epoch (median) | final vs dropout (pp) | " ..
    "best vs dropout (pp) | speed vs dropout | failed runs |")
  add("|---|---|---|---|---|---|---|---|")
  local S = stats[model] or {}
  local d = S.dropout
  local df, db, dt = d and mean_sd(d.final), d and mean_sd(d.best), d and median(d.time)
  for _, method in ipairs(METHODS) do
    local s = S[method]
    if s then
      local f, fsd, n = mean_sd(s.final)
      local b, bsd = mean_sd(s.best)
      local t = median(s.time)
      add(string.format("| %s | %.2f%% ± %.2f (n=%d) | %.2f%% ± %.2f | %.3f | %s | %s | %s | %d of %d |", method,
        100 * f, 100 * fsd, n, 100 * b, 100 * bsd, t, df and string.format("%+.2f", 100 * (f - df)) or "-",
        db and string.format("%+.2f", 100 * (b - db)) or "-", dt and string.format("%.2fx", dt / t) or "-",
        s.diverged, n))
      if db and method:match("^gyro") then
        local diff, se, how = versus(s.best, d.best)
        verdict[#verdict + 1] = string.format("%s %s: best-epoch accuracy %+.2f points against dropout (two " ..
          "standard errors: %.2f; paper: up to +1.93 points): %s.", model, method, 100 * diff, 100 * se,
          how == "better" and "better than dropout, as the paper claims" or how == "worse" and
          "worse than dropout: disagrees with the paper" or how == "tied" and
          "within the seeds' noise: no measurable gain" or how == "single+" and
          "higher, but one seed cannot separate it from noise" or "lower, but one seed cannot separate it from noise")
      elseif dt and method:match("^block") then
        local diff, se, how = versus(s.best, d.best)
        local saved = 100 * (1 - t / dt)
        verdict[#verdict + 1] = string.format("%s %s: best-epoch accuracy %+.2f points against dropout (two " ..
          "standard errors %.2f)%s; %.1f%% %s time per epoch than dropout in the study's runs (medians; not a " ..
          "controlled measurement: see the note above; paper: up to 29.8%% less).", model, method, 100 * diff,
          100 * se, s.diverged > 0 and string.format(
            "; %d of %d runs failed (diverged or ended at chance)", s.diverged, n) or "", math.abs(saved),
          saved >= 0 and "less" or "more")
      end
    end
  end
end
add("\nTimes per epoch are each run's median epoch (training only, evaluation excluded), taken from runs made " ..
  "one after another, so other jobs on the machine shift them; block-wise against conventional dropout is timed " ..
  "under control, in one run, by `wb_bench_dropout` (bench/README.md). A run counts as failed when it diverged (its last " ..
  string.format("epoch's mean training loss is above %.1f, four times a uniform guess, or not finite) or ended at chance " ..
  "(final test accuracy below %.0f%%); a run stops at its first epoch with a non-finite loss, and its final accuracy " ..
  "is the diverged network's.", DIVERGED, 100 * AT_CHANCE))
add("\n## Where wb's results agree or disagree with the paper\n")
for _, v in ipairs(verdict) do add("- " .. v) end
add(string.format("\nThis invocation took %.0f s (points reused from earlier runs not counted).", wb.time() - t_start))
local out = opt.out ~= "" and opt.out or (opt.profile == "full" and "results/gyro" or "results/gyro_quick")
os.execute("mkdir -p \"$(dirname '" .. out .. "')\"")
local f = assert(io.open(out .. ".md", "w"))
f:write(table.concat(md, "\n"), "\n")
f:close()
-- one row per point, for analyses of one's own
local csv_rows = {}
for i, p in ipairs(points) do
  local r = plan.run_ids[i] and wb.store.run(plan.run_ids[i])
  local mt = r and r.metrics or {}
  local h = r and wb.store.history(r.id, "time/epoch_s") or { values = {} }
  csv_rows[i] = { plan.run_ids[i], p.model, p.method, p.seed, mt["eval/final_test_acc"], mt["eval/best_val_acc"],
    mt["eval/best_test_acc"], median(h.values), #h.values, mt["train/loss"], mt["train/diverged_epoch"],
    r and r.status or "missing" }
end
studylib.write_csv(out .. ".csv", { "run", "model", "method", "seed", "final_test_acc", "best_val_acc",
  "best_test_acc", "epoch_median_s", "epochs", "last_train_loss", "diverged_epoch", "status" }, csv_rows)
study:artifact(out .. ".md", "report")
study:artifact(out .. ".csv", "data")
print(string.format("gyro: report %s.md (CSV: %s.csv); total %.1f s", out, out, wb.time() - t_start))
