-- scripts/quickstart.lua: wb's main job. Trains an MLP 784-512-512-10 on Fashion-MNIST with SGD
-- (lr 0.05, momentum 0.9, batch 128, 2 epochs), records the run in the result store and writes
-- an HTML report (and its Markdown twin).
--
--   wb run scripts/quickstart.lua                  the defaults
--   wb run scripts/quickstart.lua --epochs 5 --lr 0.1
--   wb run scripts/quickstart.lua --help           every option and its default
--
-- Logged: train/loss every log_every steps; eval/acc, eval/loss (mean cross-entropy on the
-- 10,000 test images) and time/epoch_s after each epoch, at the global step count.
-- Needs Debian's dataset-fashion-mnist (setup.sh installs it).
local wb = require "wb"
local nn, optim = wb.nn, wb.optim

local opt = wb.args({
  lr = 0.05,
  momentum = 0.9,
  batch = 128,
  epochs = 2,
  hidden = 512,
  seed = 1,
  log_every = 50,
  train_size = 0,
  threads = 0,
}, {
  doc = {
    lr = "SGD learning rate",
    momentum = "SGD momentum",
    batch = "minibatch size",
    epochs = "passes over the training set",
    hidden = "width of the two hidden layers",
    seed = "seed of the initialisation and the shuffling",
    log_every = "log train/loss every this many steps",
    train_size = "train on the first N images only (0: all 60,000)",
    threads = "worker threads (0: the default)",
  },
})

if opt.threads > 0 then wb.set_num_threads(opt.threads) end
wb.manual_seed(opt.seed)
local run <close> = wb.experiment { name = "quickstart", params = opt }

local train = wb.data.fashion_mnist { split = "train" }
local test = wb.data.fashion_mnist { split = "test" }
if opt.train_size > 0 and opt.train_size < train:size() then
  train = train:subset(wb.arange(opt.train_size, { dtype = "int64" }))
end

local H = opt.hidden
local model = nn.Sequential {
  nn.Flatten(),
  nn.Linear(784, H), nn.ReLU(),
  nn.Linear(H, H), nn.ReLU(),
  nn.Linear(H, 10),
}
local sgd = optim.SGD(model:parameters(), { lr = opt.lr, momentum = opt.momentum })
print(string.format("quickstart: run %d, MLP 784-%d-%d-10, %d training images, %d epochs, %d threads",
  run:id(), H, H, train:size(), opt.epochs, wb.get_num_threads()))

local steps_per_epoch = math.ceil(train:size() / opt.batch)
local step = 0
for epoch = 1, opt.epochs do
  model:train()
  local t0 = wb.time()
  local bar <close> = wb.progress {
    total = steps_per_epoch, batch = opt.batch,
    label = string.format("epoch %d/%d", epoch, opt.epochs),
  }
  local in_epoch = 0
  for x, y in train:batches { size = opt.batch, shuffle = true, seed = opt.seed } do
    local loss = nn.cross_entropy(model(x), y)
    sgd:zero_grad()
    loss:backward()
    sgd:step()
    step, in_epoch = step + 1, in_epoch + 1
    if step % opt.log_every == 0 then
      local l = loss:item()
      run:log(step, { ["train/loss"] = l })
      bar:update(in_epoch, { loss = l })
    else
      bar:update(in_epoch)
    end
  end
  bar:close()
  local epoch_s = wb.time() - t0
  model:evaluate()
  local acc = wb.metrics.accuracy(model, test)
  local test_loss = wb.metrics.nll(model, test)
  run:log(step, { ["eval/acc"] = acc, ["eval/loss"] = test_loss, ["time/epoch_s"] = epoch_s })
  print(string.format("epoch %d: test accuracy %.4f, test loss %.4f (%.1f s)", epoch, acc, test_loss,
    epoch_s))
end

run:finish()
local html, md = wb.report { experiment = "quickstart", out = "results/quickstart.html" }
run:artifact(html, "report")
print(string.format("report: %s (Markdown: %s); database: %s", html, md, wb.store.path()))
