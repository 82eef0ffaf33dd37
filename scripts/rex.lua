-- scripts/rex.lua: budgeted training with every learning-rate schedule of wb.schedules, after
-- Chen, Wolfe and Kyrillidis, "REX: Revisiting Budgeted Training with an Improved Schedule"
-- (MLSys 2022). Fashion-MNIST; the MLP 784-512-512-10 and the LeNet-style CNN of the training
-- benchmark (conv 1-32 5x5, pool, conv 32-64 5x5, pool, linear 3136-256-10); SGD (momentum
-- 0.9, lr 0.05, the training benchmark's recipe) and Adam (lr 1e-3, its usual default); budgets
-- of 10%, 25%, 50% and 100% of a full budget; every schedule at its default knobs plus REX with
-- d = 0.9; several seeds. The claim tested: REX is best or tied at low budgets (10%, 25%) and
-- competitive at high ones (50%, 100%).
--
--   wb run scripts/rex.lua --profile quick     CI smoke run: tiny models (MLP 784-128-128-10,
--                                               CNN with 4 and 8 channels), 2,048 training and
--                                               1,000 test images, a full budget of 128 steps,
--                                               1 seed, 1 thread: 192 runs. Measured 30-44 s
--                                               wall (29 s CPU), report included, on this
--                                               2-core machine while other jobs kept it at
--                                               load 3-7; writes results/rex_quick.{md,html}
--   wb run scripts/rex.lua --profile full      the study: all 60,000 / 10,000 images, a full
--                                               budget of 10 epochs (MLP, 4,690 steps) and 1
--                                               epoch (CNN, 469 steps) at batch 128, 3 seeds:
--                                               576 runs, 625k MLP and 63k CNN steps; writes
--                                               results/rex.{md,html}. Estimated from timed
--                                               full-profile runs on this 2-core machine with 1
--                                               thread (MLP 3.8 ms/step, CNN 118 ms/step, test
--                                               evaluation 0.4 s / 4 s per run): about 3 h
--                                               (40 min MLP, 2.3 h CNN), more when the machine
--                                               is shared (8 ms and 166 ms per step were
--                                               measured under load 7). Two threads help only on
--                                               an idle machine: under load they were 5-10 times
--                                               slower than one, so pass --threads 1 when other
--                                               jobs run. To use both cores, run parts side by
--                                               side on one database (e.g. --optimizers sgd and
--                                               --optimizers adam, each --threads 1), then the
--                                               whole command, which reuses their runs.
--   wb run scripts/rex.lua --help              every option
--
-- A killed run resumes: the same command again skips the points that already FINISHED (run:sweep);
-- any rex run of the same database reuses a point some earlier rex run finished with the same
-- options that decide its result (model, optimizer, budget, seed, schedule, data sizes, batch, the
-- model's budget and widths, the optimizer's learning rate, warm-up, plateau windows).
-- Every point is a child run of the study's run with params model, optimizer, budget, schedule,
-- seed (and all the options). Logged per run, at the step count: train/loss (mean over the last
-- log interval) and train/lr about 200 times, and at the end eval/acc, eval/loss (test set),
-- time/run_s and train/steps. Reduce-on-plateau is fed the mean training loss of each of
-- plateau_windows equal windows of the budget. Each schedule is given as name or
-- name:knob=value:... (e.g. rex:d=0.9, plateau:factor=0.5:patience=2).
--
-- The report (Markdown and HTML with inline SVG) is computed from the result store after the
-- runs: accuracy against budget per schedule (mean and a band of one standard deviation across
-- seeds), the rank of each schedule in every (model, optimizer, budget) setting, the mean rank,
-- the learning-rate curves as logged, and a setting-by-setting verdict on the paper's claim.
local wb = require "wb"
local schedules = require "wb.schedules"
local studylib = require "studylib"
local nn, optim = wb.nn, wb.optim

local ALL = "constant,step,multistep,exponential,linear,cosine,onecycle,poly,invsqrt," ..
    "plateau:factor=0.5:patience=2,rex,rex:d=0.9"

local opt = wb.args({
  profile = "quick",
  models = "mlp,cnn",
  optimizers = "sgd,adam",
  budgets = "0.1,0.25,0.5,1",
  schedules = ALL,
  seeds = 0,
  train_size = -1,
  test_size = -1,
  batch = 0,
  mlp_epochs = 0,
  cnn_epochs = 0,
  sgd_lr = 0.05,
  momentum = 0.9,
  adam_lr = 1e-3,
  warmup_frac = 0.0,
  plateau_windows = 20,
  margin_pp = 0.5,
  out = "",
  report_only = false,
  threads = 0,
}, {
  doc = {
    profile = "quick (CI smoke run) or full (the study); options at 0 or -1 take the profile's value",
    models = "comma-separated: mlp, cnn",
    optimizers = "comma-separated: sgd, adam",
    budgets = "fractions of the full budget, comma-separated",
    schedules = "comma-separated schedules, each name or name:knob=value:...",
    seeds = "seeds 1..N (0: quick 1, full 3)",
    train_size = "training images (-1: quick 2048, full 60000)",
    test_size = "test images (-1: quick 1000, full 10000)",
    batch = "minibatch size (0: quick 64, full 128)",
    mlp_epochs = "the MLP's full budget in epochs (0: quick 4, full 10)",
    cnn_epochs = "the CNN's full budget in epochs (0: quick 4, full 1)",
    sgd_lr = "SGD's base learning rate",
    momentum = "SGD momentum",
    adam_lr = "Adam's base learning rate",
    warmup_frac = "linear warm-up as a fraction of each budget (every schedule)",
    plateau_windows = "reduce-on-plateau observes the mean training loss this many times per budget",
    margin_pp = "high budgets: within this many accuracy points of the best counts as competitive",
    out = "report path without extension (default results/rex for full, results/rex_quick for quick)",
    report_only = "train nothing: report the points earlier runs finished and list the missing ones",
    threads = "worker threads (0: quick 1, as its tiny models gain nothing from more; full: the default)",
  },
})

-- ---------------------------------------------------------------- settings

local PROFILES = {
  quick = { seeds = 1, train_size = 2048, test_size = 1000, batch = 64, mlp_epochs = 4, cnn_epochs = 4,
            mlp_hidden = 128, cnn = { 4, 8, 32 } },
  full = { seeds = 3, train_size = 60000, test_size = 10000, batch = 128, mlp_epochs = 10, cnn_epochs = 1,
           mlp_hidden = 512, cnn = { 32, 64, 256 } },
}
local P = PROFILES[opt.profile]
if not P then error("--profile must be quick or full (got " .. opt.profile .. ")", 0) end
local function pick(v, unset, default) if v == unset then return default end return v end

local function split(text, sep)
  local out = {}
  for part in (text .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do
    part = part:match "^%s*(.-)%s*$"
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

local cfg = {
  profile = opt.profile,
  seeds = pick(opt.seeds, 0, P.seeds),
  train_size = pick(opt.train_size, -1, P.train_size),
  test_size = pick(opt.test_size, -1, P.test_size),
  batch = pick(opt.batch, 0, P.batch),
  mlp_epochs = pick(opt.mlp_epochs, 0, P.mlp_epochs),
  cnn_epochs = pick(opt.cnn_epochs, 0, P.cnn_epochs),
  mlp_hidden = P.mlp_hidden,
  cnn_widths = table.concat(P.cnn, ","),
}
for _, k in ipairs { "seeds", "train_size", "test_size", "batch", "mlp_epochs", "cnn_epochs" } do
  if cfg[k] < 1 then error(string.format("--%s must be >= 1 (got %d)", k, cfg[k]), 0) end
end
if opt.plateau_windows < 1 then error("--plateau_windows must be >= 1", 0) end
local out = opt.out ~= "" and opt.out or (opt.profile == "full" and "results/rex" or "results/rex_quick")
local MODELS, OPTIMIZERS, SCHEDULES = split(opt.models, ","), split(opt.optimizers, ","), split(opt.schedules, ",")
local BUDGETS = {}
for _, b in ipairs(split(opt.budgets, ",")) do
  local v = tonumber(b)
  if not v or v <= 0 or v > 1 then error("--budgets: " .. b .. " is not a fraction in (0, 1]", 0) end
  BUDGETS[#BUDGETS + 1] = v
end
table.sort(BUDGETS)
for _, m in ipairs(MODELS) do
  if m ~= "mlp" and m ~= "cnn" then error("--models: unknown model '" .. m .. "'; known: mlp, cnn", 0) end
end
local BASE_LR = { sgd = opt.sgd_lr, adam = opt.adam_lr }
for _, o in ipairs(OPTIMIZERS) do
  if not BASE_LR[o] then error("--optimizers: unknown optimizer '" .. o .. "'; known: sgd, adam", 0) end
end

-- "rex:d=0.9" -> "rex", {d = 0.9}; knob values are numbers, or true/false
local function parse_schedule(text)
  local parts = split(text, ":")
  local name, knobs = parts[1], {}
  for i = 2, #parts do
    local k, v = parts[i]:match "^([%w_]+)=(.+)$"
    if not k then error("--schedules: '" .. parts[i] .. "' in '" .. text .. "' is not knob=value", 0) end
    if v == "true" or v == "false" then knobs[k] = v == "true" else knobs[k] = tonumber(v) end
    if knobs[k] == nil then error("--schedules: " .. k .. " = " .. v .. " is not a number", 0) end
  end
  return name, knobs
end

-- The schedule of spec for a run of `steps` steps from base_lr (errors name the schedule).
local function make_schedule(spec, base_lr, steps)
  local name, knobs = parse_schedule(spec)
  local o = { base_lr = base_lr, total_steps = steps }
  if opt.warmup_frac > 0 then o.warmup_frac = opt.warmup_frac end
  for k, v in pairs(knobs) do o[k] = v end
  return schedules.new(name, o)
end
for _, spec in ipairs(SCHEDULES) do make_schedule(spec, 1, 100) end -- fail fast on a typo

if opt.threads > 0 then
  wb.set_num_threads(opt.threads)
elseif opt.profile == "quick" then
  wb.set_num_threads(1)
end

-- ---------------------------------------------------------------- data and models

local train_all = wb.data.fashion_mnist { split = "train" }
local test = wb.data.fashion_mnist { split = "test" }
local function first(ds, n)
  if n >= ds:size() then return ds end
  return ds:subset(wb.arange(n, { dtype = "int64" }))
end
train_all, test = first(train_all, cfg.train_size), first(test, cfg.test_size)
local steps_per_epoch = math.ceil(train_all:size() / cfg.batch)
local FULL_STEPS = { mlp = cfg.mlp_epochs * steps_per_epoch, cnn = cfg.cnn_epochs * steps_per_epoch }

local function build(model)
  if model == "mlp" then
    local h = cfg.mlp_hidden
    return nn.Sequential { nn.Flatten(), nn.Linear(784, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10) }
  end
  local c1, c2, h = table.unpack(P.cnn)
  return nn.Sequential {
    nn.Conv2d(1, c1, 5, { padding = 2 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(c1, c2, 5, { padding = 2 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(c2 * 49, h), nn.ReLU(), nn.Linear(h, 10),
  }
end

-- Test accuracy and mean cross-entropy in one pass (eval mode, no graph).
local function evaluate(model, ds)
  model:evaluate()
  local correct, nll, n = 0, 0, 0
  wb.no_grad(function()
    for x, y in ds:batches { size = 500 } do
      local logits, b = model(x), y:numel()
      correct = correct + wb.metrics.accuracy(logits, y) * b
      nll = nll + nn.cross_entropy(logits, y, { reduction = "sum" }):item()
      n = n + b
    end
  end)
  model:train()
  return correct / n, nll / n
end

-- ---------------------------------------------------------------- one run

local function budget_steps(model, budget) return math.max(1, math.floor(budget * FULL_STEPS[model] + 0.5)) end

local function train_point(p, run)
  local steps = budget_steps(p.model, p.budget)
  local model = build(p.model)
  local o = p.optimizer == "sgd" and optim.SGD(model, { lr = BASE_LR.sgd, momentum = opt.momentum })
      or optim.Adam(model, { lr = BASE_LR.adam })
  local s <close> = make_schedule(p.schedule, BASE_LR[p.optimizer], steps)
  local metric_driven = schedules.info(s:name()).metric
  -- a fresh view of the training set, so every schedule of a seed sees the same batches
  local train = wb.data.dataset(train_all:x(), train_all:y(), { n_classes = 10 })
  local log_every = math.max(1, steps // 200)
  local window = math.max(1, steps // opt.plateau_windows)
  local step, t0 = 0, wb.time()
  local log_sum, log_n, win_sum, win_n = 0, 0, 0, 0
  model:train()
  while step < steps do
    for x, y in train:batches { size = cfg.batch, shuffle = true, seed = p.seed } do
      local lr = s:apply(o, step)
      local loss = nn.cross_entropy(model(x), y)
      o:zero_grad()
      loss:backward()
      o:step()
      local l = loss:item()
      step = step + 1
      log_sum, log_n, win_sum, win_n = log_sum + l, log_n + 1, win_sum + l, win_n + 1
      if step % log_every == 0 or step == steps then
        run:log(step, { ["train/loss"] = log_sum / log_n, ["train/lr"] = lr })
        log_sum, log_n = 0, 0
      end
      if metric_driven and (step % window == 0 or step == steps) then
        s:observe(win_sum / win_n)
        win_sum, win_n = 0, 0
      end
      if step == steps then break end
    end
  end
  local run_s = wb.time() - t0
  local acc, nll = evaluate(model, test)
  run:log(steps, { ["eval/acc"] = acc, ["eval/loss"] = nll, ["time/run_s"] = run_s, ["train/steps"] = steps })
end

-- ---------------------------------------------------------------- the sweep

local seeds = {}
for i = 1, cfg.seeds do seeds[i] = i end
local points = wb.grid({ model = MODELS, optimizer = OPTIMIZERS, budget = BUDGETS, seed = seeds, schedule = SCHEDULES },
  { order = { "model", "optimizer", "budget", "seed", "schedule" } })

local params = { models = opt.models, optimizers = opt.optimizers, budgets = opt.budgets, schedules = opt.schedules }
for k, v in pairs(cfg) do params[k] = v end
local study_name = opt.profile == "full" and "rex" or "rex_quick"
local study <close> = wb.experiment { name = study_name, params = params }
print(string.format("rex: %s profile, %d runs (%d models x %d optimizers x %d budgets x %d seeds x %d schedules), " ..
  "%d training images, full budgets: mlp %d steps, cnn %d steps, %d threads",
  opt.profile, #points, #MODELS, #OPTIMIZERS, #BUDGETS, cfg.seeds, #SCHEDULES, train_all:size(),
  FULL_STEPS.mlp, FULL_STEPS.cnn, wb.get_num_threads()))
-- Reuse: a point already FINISHED by an earlier rex run of this database (any selection of
-- models, optimizers, budgets and schedules, e.g. halves of the study run side by side as two
-- processes) is not trained again, provided every option that decides its result is the same.
local function point_keys(p)
  local keys = { "model", "optimizer", "budget", "seed", "schedule", "profile", "train_size", "test_size", "batch",
    "warmup_frac", "plateau_windows" }
  local more = p.model == "mlp" and { "mlp_epochs", "mlp_hidden" } or { "cnn_epochs", "cnn_widths" }
  for _, k in ipairs(more) do keys[#keys + 1] = k end
  for _, k in ipairs(p.optimizer == "sgd" and { "sgd_lr", "momentum" } or { "adam_lr" }) do keys[#keys + 1] = k end
  return keys
end
local function point_value(p, k)
  if p[k] ~= nil then return p[k] end
  if cfg[k] ~= nil then return cfg[k] end
  return opt[k]
end
local plan = studylib.plan(study_name, points, { keys = point_keys, value = point_value, done = "eval/acc" })
local todo, run_ids, reused = plan.todo, plan.run_ids, plan.reused
if opt.report_only then
  if #todo > 0 then print(string.format("rex: --report_only: %d points not run", #todo)) end
  todo = {}
end
if reused > 0 then print(string.format("rex: %d of %d points reused from earlier runs in %s", reused, #points,
    wb.store.path())) end

local t_start = wb.time()
local done = 0
local result = study:sweep(todo, function(p, run)
  train_point(p, run)
  done = done + 1
  if done % 12 == 0 or done == #todo then
    io.stderr:write(string.format("rex: %d/%d runs, %.0f s\n", done, #todo, wb.time() - t_start))
  end
end)
plan.fill(result)
local sweep_s = wb.time() - t_start
print(string.format("rex: %d ran, %d reused, %d skipped (already finished), %d failed in %.1f s",
  result.ran, reused, result.skipped, result.failed, sweep_s))

-- ---------------------------------------------------------------- statistics from the store

local function mean_sd(xs)
  local n, s = #xs, 0
  if n == 0 then return nil end
  for _, x in ipairs(xs) do s = s + x end
  local m, v = s / n, 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, n > 1 and math.sqrt(v / (n - 1)) or nil, n
end

-- acc[model][optimizer][budget][schedule] = {values across seeds}
local acc, n_finished, run_s_total, failed = {}, 0, 0, {}
local lr_runs = {} -- [optimizer][schedule] = run id at the full budget, first seed, first model
for i, p in ipairs(points) do
  local r = run_ids[i] and wb.store.run(run_ids[i])
  if r and r.status == "FINISHED" and r.metrics["eval/acc"] then
    n_finished = n_finished + 1
    run_s_total = run_s_total + (r.metrics["time/run_s"] or 0)
    local t = acc
    for _, k in ipairs { p.model, p.optimizer, p.budget } do
      t[k] = t[k] or {}
      t = t[k]
    end
    t[p.schedule] = t[p.schedule] or {}
    table.insert(t[p.schedule], r.metrics["eval/acc"])
    if p.model == MODELS[1] and p.budget == BUDGETS[#BUDGETS] and p.seed == 1 then
      lr_runs[p.optimizer] = lr_runs[p.optimizer] or {}
      lr_runs[p.optimizer][p.schedule] = r.id
    end
  else
    if r then
      failed[#failed + 1] = string.format("%s (run %s: %s)", r.name or "?", tostring(run_ids[i]), r.error or r.status)
    else
      failed[#failed + 1] = string.format("budget=%s,model=%s,optimizer=%s,schedule=%s,seed=%s (not run)", p.budget,
        p.model, p.optimizer, p.schedule, p.seed)
    end
  end
end

-- One setting: stats per schedule, ranks (1 = best mean accuracy; equal means share the average
-- rank), the best, and for each schedule whether it is tied with the best: the gap is within two
-- standard errors of the difference, 2 sqrt(sd_best^2 / n_best + sd^2 / n) (one seed: no ties).
local function setting(model, o, b)
  local cells = acc[model] and acc[model][o] and acc[model][o][b]
  if not cells then return nil end
  local rows = {}
  for _, spec in ipairs(SCHEDULES) do
    local m, sd, n = mean_sd(cells[spec] or {})
    if m then rows[#rows + 1] = { spec = spec, mean = m, sd = sd, n = n } end
  end
  if #rows == 0 then return nil end
  local sorted = {}
  for i, r in ipairs(rows) do sorted[i] = r end
  table.sort(sorted, function(a, c) return a.mean > c.mean end)
  local i = 1
  while i <= #sorted do
    local j = i
    while j < #sorted and sorted[j + 1].mean == sorted[i].mean do j = j + 1 end
    for k = i, j do sorted[k].rank = (i + j) / 2 end
    i = j + 1
  end
  local best = sorted[1]
  local by = {}
  for _, r in ipairs(rows) do
    r.gap = best.mean - r.mean
    local se = (best.sd and r.sd) and 2 * math.sqrt(best.sd ^ 2 / best.n + r.sd ^ 2 / r.n) or 0
    r.tied = r.gap <= se
    by[r.spec] = r
  end
  return { rows = rows, by = by, best = best, n = #rows }
end

local SETTINGS = {}
for _, m in ipairs(MODELS) do
  for _, o in ipairs(OPTIMIZERS) do
    for _, b in ipairs(BUDGETS) do
      local s = setting(m, o, b)
      if s then SETTINGS[#SETTINGS + 1] = { model = m, optimizer = o, budget = b, s = s } end
    end
  end
end

local REX = "rex"
local function low(b) return b <= 0.25 end
-- mean ranks per schedule: all settings, low budgets, high budgets; settings best or tied
local rank_sum = {}
for _, spec in ipairs(SCHEDULES) do rank_sum[spec] = { all = {}, low = {}, high = {}, top = 0 } end
for _, st in ipairs(SETTINGS) do
  for _, r in ipairs(st.s.rows) do
    local t = rank_sum[r.spec]
    table.insert(t.all, r.rank)
    table.insert(low(st.budget) and t.low or t.high, r.rank)
    if r.tied then t.top = t.top + 1 end
  end
end

-- ---------------------------------------------------------------- the report

local function pct(x) return x and string.format("%.2f", 100 * x) or "-" end
local function fmt_rank(x) return x and (x == math.floor(x) and string.format("%d", x) or string.format("%.1f", x)) or "-" end
local function budget_label(b) return string.format("%g%%", 100 * b) end
local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end
local function mdcell(s) return (tostring(s):gsub("|", "\\|"):gsub("\n", " ")) end

-- Each table: {head = {...}, rows = {{...}, ...}, bold = {[row] = {[col] = true}}}; both renderers.
local function md_table(t)
  local lines = { "| " .. table.concat((function()
    local h = {}
    for i, c in ipairs(t.head) do h[i] = mdcell(c) end
    return h
  end)(), " | ") .. " |" }
  local sep = {} -- numeric columns right-aligned
  for i = 1, #t.head do
    local num = i > 1
    for _, row in ipairs(t.rows) do num = num and tostring(row[i]):match "^%-?[%d%.]" ~= nil end
    sep[i] = num and "---:" or "---"
  end
  lines[2] = "| " .. table.concat(sep, " | ") .. " |"
  for r, row in ipairs(t.rows) do
    local cells = {}
    for c, v in ipairs(row) do
      cells[c] = (t.bold and t.bold[r] and t.bold[r][c]) and ("**" .. mdcell(v) .. "**") or mdcell(v)
    end
    lines[#lines + 1] = "| " .. table.concat(cells, " | ") .. " |"
  end
  return table.concat(lines, "\n") .. "\n"
end
local function html_table(t)
  local h = { "<table><thead><tr>" }
  for _, c in ipairs(t.head) do h[#h + 1] = "<th>" .. esc(c) .. "</th>" end
  h[#h + 1] = "</tr></thead><tbody>"
  for r, row in ipairs(t.rows) do
    h[#h + 1] = "<tr>"
    for c, v in ipairs(row) do
      local b = t.bold and t.bold[r] and t.bold[r][c]
      h[#h + 1] = (c == 1 and "<td>" or "<td class=n>") .. (b and "<b>" or "") .. esc(v) .. (b and "</b>" or "") .. "</td>"
    end
    h[#h + 1] = "</tr>"
  end
  h[#h + 1] = "</tbody></table>"
  return table.concat(h)
end

local COLORS = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#000000", "#a05d00", "#3b3eac", "#0099c6" }
local function color(i) return COLORS[(i - 1) % #COLORS + 1] end

-- ticks for [lo, hi]: about n steps of 1, 2 or 5 times a power of ten
local function ticks(lo, hi, n)
  local span = hi - lo
  if span <= 0 then return { lo } end
  local raw = span / n
  local p = 10 ^ math.floor(math.log(raw, 10))
  local step = p
  for _, k in ipairs { 1, 2, 5, 10 } do
    if k * p >= raw then step = k * p break end
  end
  local out = {}
  for v = math.ceil(lo / step) * step, hi + 1e-12, step do out[#out + 1] = v end
  return out
end

-- A line chart as inline SVG. c = {title=, xlabel=, ylabel=, xlog=, xticks={{v=, label=}},
-- yfmt=fn, series={{label=, color=, xs=, ys=, lo=, hi=, bold=}}}
local function svg_chart(c)
  local W, H, L, R, T, B = 660, 330, 56, 190, 26, 40
  local fx = c.xlog and math.log or function(v) return v end
  local x0, x1, y0, y1 = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(c.series) do
    for i, x in ipairs(s.xs) do
      x0, x1 = math.min(x0, fx(x)), math.max(x1, fx(x))
      local lo, hi = s.lo and s.lo[i] or s.ys[i], s.hi and s.hi[i] or s.ys[i]
      y0, y1 = math.min(y0, lo, s.ys[i]), math.max(y1, hi, s.ys[i])
    end
  end
  if x0 > x1 then return "<p>(no data)</p>" end
  if x1 == x0 then x0, x1 = x0 - 1, x1 + 1 end
  local pad = (y1 - y0) * 0.05
  if pad == 0 then pad = math.abs(y1) * 0.05 + 1e-3 end
  y0, y1 = y0 - pad, y1 + pad
  local function px(x) return L + (fx(x) - x0) / (x1 - x0) * (W - L - R) end
  local function py(y) return T + (y1 - y) / (y1 - y0) * (H - T - B) end
  local o = { string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
    'font-family="sans-serif" font-size="11">', W, H, W, H) }
  o[#o + 1] = string.format('<text x="%d" y="16" font-size="13" font-weight="bold">%s</text>', L, esc(c.title))
  o[#o + 1] = string.format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>', L, T,
    W - L - R, H - T - B)
  for _, v in ipairs(ticks(y0, y1, 5)) do
    o[#o + 1] = string.format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>' ..
      '<text x="%d" y="%.1f" text-anchor="end">%s</text>', L, W - R, py(v), py(v), L - 4, py(v) + 4,
      esc((c.yfmt or tostring)(v)))
  end
  for _, t in ipairs(c.xticks) do
    o[#o + 1] = string.format('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>' ..
      '<text x="%.1f" y="%d" text-anchor="middle">%s</text>', px(t.v), px(t.v), T, H - B, px(t.v), H - B + 14,
      esc(t.label))
  end
  o[#o + 1] = string.format('<text x="%d" y="%d" text-anchor="middle">%s</text>', (L + W - R) // 2, H - 6, esc(c.xlabel))
  o[#o + 1] = string.format('<text transform="translate(12 %d) rotate(-90)" text-anchor="middle">%s</text>',
    (T + H - B) // 2, esc(c.ylabel))
  for k, s in ipairs(c.series) do
    if s.lo and #s.xs > 0 then
      local pts = {}
      for i = 1, #s.xs do pts[#pts + 1] = string.format("%.1f,%.1f", px(s.xs[i]), py(s.hi[i])) end
      for i = #s.xs, 1, -1 do pts[#pts + 1] = string.format("%.1f,%.1f", px(s.xs[i]), py(s.lo[i])) end
      o[#o + 1] = string.format('<polygon points="%s" fill="%s" fill-opacity="0.12" stroke="none"/>',
        table.concat(pts, " "), s.color)
    end
    local pts = {}
    for i = 1, #s.xs do pts[#pts + 1] = string.format("%.1f,%.1f", px(s.xs[i]), py(s.ys[i])) end
    o[#o + 1] = string.format('<polyline points="%s" fill="none" stroke="%s" stroke-width="%s"%s><title>%s</title></polyline>',
      table.concat(pts, " "), s.color, s.bold and "2.8" or "1.4", s.dash and ' stroke-dasharray="5 3"' or "", esc(s.label))
    local ly = T + 6 + (k - 1) * 15
    o[#o + 1] = string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="%s"%s/>' ..
      '<text x="%d" y="%d">%s</text>', W - R + 10, W - R + 30, ly, ly, s.color, s.bold and "2.8" or "1.4",
      s.dash and ' stroke-dasharray="5 3"' or "", W - R + 35, ly + 4, esc(s.label))
  end
  o[#o + 1] = "</svg>"
  return table.concat(o, "\n")
end

local study_info = wb.store.run(study:id())
local command = study_info.tags and study_info.tags["wb.command"] or ("wb run scripts/rex.lua --profile " .. opt.profile)
local md, html = {}, {}
local function both(m, h) md[#md + 1] = m; html[#html + 1] = h end
local function section(title) both("\n## " .. title .. "\n", "<h2>" .. esc(title) .. "</h2>") end
local function para(text) both(text .. "\n", "<p>" .. esc(text):gsub("`(.-)`", "<code>%1</code>") .. "</p>") end
local function tbl(t) both("\n" .. md_table(t), html_table(t)) end

both("# REX and budgeted training on Fashion-MNIST (wb)\n",
  "<h1>REX and budgeted training on Fashion-MNIST (wb)</h1>")
para(string.format("Made by `%s` (study run %d, experiment %s, database %s), git commit %s%s, %s profile, %s.",
  command, study:id(), study_info.experiment or "?", wb.store.path(), study_info.git_commit or "?",
  study_info.git_dirty and " (dirty)" or "", opt.profile, os.date("!%Y-%m-%d %H:%M UTC")))
para(string.format("Setup: %s; %s; budgets %s of a full budget of %d steps (MLP, %d epochs) and %d steps (CNN, " ..
  "%d epochs) at batch %d on %d training images; test accuracy on %d test images; seeds 1..%d; base learning " ..
  "rates SGD %g (momentum %g), Adam %g; warm-up %g of each budget; %d threads. %d of %d runs finished; " ..
  "training and evaluation took %.0f s of run time (the sweep %.0f s).",
  table.concat(MODELS, ", "), table.concat(OPTIMIZERS, ", "), opt.budgets, FULL_STEPS.mlp, cfg.mlp_epochs,
  FULL_STEPS.cnn, cfg.cnn_epochs, cfg.batch, train_all:size(), test:size(), cfg.seeds, opt.sgd_lr, opt.momentum,
  opt.adam_lr, opt.warmup_frac, wb.get_num_threads(), n_finished, #points, run_s_total, sweep_s))
if cfg.mlp_hidden ~= 512 then
  para(string.format("Models are the quick profile's small versions: MLP 784-%d-%d-10, CNN with %s channels " ..
    "and hidden width. Not the study's result.", cfg.mlp_hidden, cfg.mlp_hidden, cfg.cnn_widths))
end
if reused > 0 then
  para(string.format("%d of the %d points were reused from earlier rex runs of this database with the same " ..
    "options: %s.", reused, #points, studylib.sources(run_ids, study:id())))
end
if #failed > 0 then para("Runs that did not finish: " .. table.concat(failed, "; ")) end

-- the verdict
section("The paper's claim, setting by setting")
para(string.format("Claim: REX (d = 0.5) is best or tied at low budgets (10%%, 25%%) and competitive at high ones " ..
  "(50%%, 100%%), compared here with every other schedule run (REX with another d included). Tied: the gap to the best mean accuracy is within two standard errors of the difference " ..
  "across seeds (with one seed, only an exact tie). Competitive: tied, or within %g accuracy points of the best.",
  opt.margin_pp))
-- REX against one rival row: tied (gap within two standard errors), and the verdict at this budget
local function judge(r, rival, budget)
  local gap = rival.mean - r.mean
  local se = (rival.sd and r.sd) and 2 * math.sqrt(rival.sd ^ 2 / rival.n + r.sd ^ 2 / r.n) or 0
  local tied = gap <= se
  local ok = tied
  if not low(budget) then ok = tied or 100 * gap <= opt.margin_pp end
  local what = low(budget) and (tied and "agrees: best or tied" or "disagrees: not best")
      or (ok and "agrees: competitive" or "disagrees: not competitive")
  return ok, what, gap
end
local function is_rex(spec) return spec == "rex" or spec:match("^rex:") ~= nil end
local verdict = { head = { "model", "optimizer", "budget", "REX acc %", "best", "best acc %", "gap (points)",
  "REX rank", "verdict", "best other profile", "its acc %", "verdict against other profiles" }, rows = {}, bold = {} }
local agree, agree_other, total = 0, 0, 0
for _, st in ipairs(SETTINGS) do
  local r = st.s.by[REX]
  if r then
    local ok, what = judge(r, st.s.best, st.budget)
    -- the paper's comparison: REX against the other families (REX variants left out)
    local other
    for _, row in ipairs(st.s.rows) do
      if not is_rex(row.spec) and (not other or row.mean > other.mean) then other = row end
    end
    local ok2, what2 = true, "-"
    if other then ok2, what2 = judge(r, other, st.budget) end
    total = total + 1
    if ok then agree = agree + 1 end
    if ok2 then agree_other = agree_other + 1 end
    verdict.rows[#verdict.rows + 1] = { st.model, st.optimizer, budget_label(st.budget),
      pct(r.mean) .. (r.sd and (" ± " .. pct(r.sd)) or ""), st.s.best.spec, pct(st.s.best.mean),
      string.format("%.2f", 100 * (st.s.best.mean - r.mean)), fmt_rank(r.rank) .. " of " .. st.s.n, what,
      other and other.spec or "-", other and pct(other.mean) or "-", what2 }
    verdict.bold[#verdict.rows] = { [9] = not ok, [12] = not ok2 }
  end
end
tbl(verdict)
para(total > 0 and string.format("wb's runs agree with the claim in %d of %d settings against every schedule " ..
  "run, and in %d of %d against the other profiles alone (REX variants such as another d left out).", agree, total,
  agree_other, total) or "REX was not among the schedules run.")

-- mean ranks
section("Mean rank across settings")
para("Rank 1 is the best mean test accuracy in a (model, optimizer, budget) setting; the mean is over settings.")
local order = {}
for _, spec in ipairs(SCHEDULES) do order[#order + 1] = spec end
local function avg(xs) local m = mean_sd(xs) return m end
table.sort(order, function(a, c) return (avg(rank_sum[a].all) or math.huge) < (avg(rank_sum[c].all) or math.huge) end)
local mr = { head = { "schedule", "mean rank", "low budgets (<= 25%)", "high budgets (>= 50%)", "settings best or tied" },
  rows = {}, bold = {} }
for _, spec in ipairs(order) do
  local t = rank_sum[spec]
  mr.rows[#mr.rows + 1] = { spec, avg(t.all) and string.format("%.2f", avg(t.all)) or "-",
    avg(t.low) and string.format("%.2f", avg(t.low)) or "-", avg(t.high) and string.format("%.2f", avg(t.high)) or "-",
    string.format("%d of %d", t.top, #t.all) }
  if spec == REX then mr.bold[#mr.rows] = { true, true, true, true, true } end
end
tbl(mr)

-- accuracy against budget, and ranks, per (model, optimizer)
local xticks = {}
for _, b in ipairs(BUDGETS) do xticks[#xticks + 1] = { v = b, label = budget_label(b) } end
for _, m in ipairs(MODELS) do
  for _, o in ipairs(OPTIMIZERS) do
    section(string.format("%s, %s: accuracy against budget", m, o))
    local series = {}
    local t = { head = { "schedule" }, rows = {}, bold = {} }
    for _, b in ipairs(BUDGETS) do t.head[#t.head + 1] = budget_label(b) .. " acc % (rank)" end
    for k, spec in ipairs(SCHEDULES) do
      local s = { label = spec, color = color(k), xs = {}, ys = {}, lo = {}, hi = {}, bold = spec == REX,
        dash = k > 10 and spec ~= REX }
      local row, bold = { spec }, {}
      for j, b in ipairs(BUDGETS) do
        local cells = acc[m] and acc[m][o] and acc[m][o][b] and acc[m][o][b][spec]
        local mean, sd = mean_sd(cells or {})
        local st = setting(m, o, b)
        local r = st and st.by[spec]
        row[j + 1] = mean and string.format("%s%s (%s)", pct(mean), sd and (" ± " .. pct(sd)) or "", fmt_rank(r and r.rank))
            or "-"
        bold[j + 1] = r and r.rank == 1
        if mean then
          s.xs[#s.xs + 1], s.ys[#s.ys + 1] = b, 100 * mean
          s.lo[#s.lo + 1], s.hi[#s.hi + 1] = 100 * (mean - (sd or 0)), 100 * (mean + (sd or 0))
        end
      end
      t.rows[#t.rows + 1] = row
      t.bold[#t.rows] = bold
      series[#series + 1] = s
    end
    html[#html + 1] = svg_chart { title = string.format("%s, %s: test accuracy (mean ± sd over seeds)", m, o),
      xlabel = "budget (fraction of the full budget, log scale)", ylabel = "test accuracy %", xlog = true,
      xticks = xticks, series = series, yfmt = function(v) return string.format("%g", v) end }
    para("Test accuracy % (mean ± standard deviation across seeds) and, in brackets, the rank in the setting.")
    tbl(t)
  end
end

-- learning-rate curves, as logged
section("Learning-rate curves")
para(string.format("The learning rate each schedule gave, as logged (train/lr), divided by the base learning rate, " ..
  "for %s at the %s budget, seed 1 (reduce-on-plateau's curve depends on the run).", MODELS[1],
  budget_label(BUDGETS[#BUDGETS])))
local lr_md = { head = { "schedule" }, rows = {} }
for _, z in ipairs { 0, 0.25, 0.5, 0.75, 1 } do lr_md.head[#lr_md.head + 1] = string.format("z = %g", z) end
for _, o in ipairs(OPTIMIZERS) do
  local series = {}
  for k, spec in ipairs(SCHEDULES) do
    local id = lr_runs[o] and lr_runs[o][spec]
    if id then
      local h = wb.store.history(id, "train/lr")
      local total = budget_steps(MODELS[1], BUDGETS[#BUDGETS])
      local s = { label = spec, color = color(k), xs = {}, ys = {}, bold = spec == REX, dash = k > 10 and spec ~= REX }
      for i, step in ipairs(h.steps) do -- logged at step count k: the lr of update k - 1, s(k - 1)
        s.xs[#s.xs + 1], s.ys[#s.ys + 1] = (step - 1) / total, h.values[i] / BASE_LR[o]
      end
      series[#series + 1] = s
      if o == OPTIMIZERS[1] then
        local row = { spec }
        for _, z in ipairs { 0, 0.25, 0.5, 0.75, 1 } do -- the logged value nearest to z
          local best, bv = math.huge, nil
          for i, step in ipairs(h.steps) do
            local d = math.abs((step - 1) / total - z)
            if d < best then best, bv = d, h.values[i] / BASE_LR[o] end
          end
          row[#row + 1] = bv and string.format("%.4f", bv) or "-"
        end
        lr_md.rows[#lr_md.rows + 1] = row
      end
    end
  end
  html[#html + 1] = svg_chart { title = string.format("%s, %s: lr / base lr (%g) over the budget", MODELS[1], o, BASE_LR[o]),
    xlabel = "fraction of the budget z", ylabel = "lr / base lr", xticks = {
      { v = 0, label = "0" }, { v = 0.25, label = "0.25" }, { v = 0.5, label = "0.5" }, { v = 0.75, label = "0.75" },
      { v = 1, label = "1" } }, series = series, yfmt = function(v) return string.format("%.2g", v) end }
end
md[#md + 1] = string.format("\nlr / base lr as logged for %s, %s, at the update nearest each z (the last update is " ..
  "at z = 1 - 1/T: the lr at z = 1 is never used):\n", MODELS[1], OPTIMIZERS[1])
md[#md + 1] = md_table(lr_md)
para("The profiles, f(z) over the fraction z of the budget (wb.schedules.info):")
local pf = { head = { "schedule", "f(z)", "knobs" }, rows = {} }
for _, spec in ipairs(SCHEDULES) do
  local name, knobs = parse_schedule(spec)
  local info = schedules.info(name)
  local ks = {}
  for _, k in ipairs(info.knobs) do
    local v = knobs[k.name]
    if v == nil then v = k.default end
    ks[#ks + 1] = k.name .. " = " .. tostring(v)
  end
  if info.milestones then ks[#ks + 1] = "milestones = {0.5, 0.75}" end
  pf.rows[#pf.rows + 1] = { spec, info.formula, table.concat(ks, ", ") }
end
tbl(pf)

local md_path, html_path = out .. ".md", out .. ".html"
os.execute("mkdir -p '" .. (md_path:match("^(.*)/") or ".") .. "'")
local f = assert(io.open(md_path, "w"))
f:write(table.concat(md, "\n"))
f:close()
f = assert(io.open(html_path, "w"))
f:write("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>REX and budgeted training (wb)</title>\n<style>",
  "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
  "table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}",
  "th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}svg{display:block;margin:1em 0}",
  "code{background:#f3f3f3;padding:0 3px}</style></head><body>\n", table.concat(html, "\n"), "\n</body></html>\n")
f:close()
-- one row per point, for analyses of one's own
local csv_path, csv_rows = out .. ".csv", {}
for i, p in ipairs(points) do
  local r = run_ids[i] and wb.store.run(run_ids[i])
  local mt = r and r.metrics or {}
  csv_rows[i] = { run_ids[i], p.model, p.optimizer, p.budget, p.schedule, p.seed, mt["train/steps"], mt["eval/acc"],
    mt["eval/loss"], mt["time/run_s"], r and r.status or "missing" }
end
studylib.write_csv(csv_path, { "run", "model", "optimizer", "budget", "schedule", "seed", "steps", "test_acc",
  "test_loss", "run_s", "status" }, csv_rows)
study:artifact(md_path, "report")
study:artifact(html_path, "report")
study:artifact(csv_path, "data")
print(string.format("rex: report %s (HTML: %s, CSV: %s) in %.1f s; total %.1f s; database %s", md_path, html_path,
  csv_path,
  wb.time() - t_start - sweep_s, wb.time() - t_start, wb.store.path()))
