-- bench/tests/lua/spec.lua: a tiny assertion library for wb's Lua API tests.
--
--   local spec = require "spec"
--   local describe, it, expect = spec.describe, spec.it, spec.expect
--   describe("tensor", function()
--     it("adds", function() expect(wb.tensor{1, 2} + 1):near{2, 3} end)
--   end)
--   spec.finish()   -- prints "N passed, N failed"; raises an error (non-zero exit) on a failure
--
-- Each `it` runs in a protected call: a failed expectation (or any error) counts as one failure,
-- is printed with its traceback, and the remaining cases still run. Numbers, Lua tables and
-- tensors compare alike: tensors are turned into nested tables with :totable().
local M = {}

local passed, failed = 0, 0
local path = {}

local function is_tensor(v)
  local mt = getmetatable(v)
  return type(v) == "userdata" and mt ~= nil and mt.__name == "wb.Tensor"
end

-- Plain Lua value of v: tensors become nested tables (numbers for 0-dim tensors).
local function plain(v)
  if is_tensor(v) then return v:totable() end
  return v
end
M.plain = plain

local function show(v, depth)
  v = plain(v)
  depth = depth or 0
  if type(v) ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local parts, n = {}, #v
  for i = 1, math.min(n, 12) do parts[#parts + 1] = show(v[i], depth + 1) end
  if n > 12 then parts[#parts + 1] = "... (" .. n .. " entries)" end
  for k, x in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or math.type(k) ~= "integer" then
      parts[#parts + 1] = tostring(k) .. "=" .. show(x, depth + 1)
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.show = show

-- Deep comparison; numbers within tol (absolute + relative), NaN equal to NaN.
local function same(a, b, tol)
  a, b = plain(a), plain(b)
  if type(a) == "number" and type(b) == "number" then
    if a ~= a and b ~= b then return true end
    if a == b then return true end
    return tol ~= nil and math.abs(a - b) <= tol * (1 + math.abs(b))
  end
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k], tol) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.same = same

local function fail(msg, level) error(msg, (level or 1) + 1) end

-- expect(v): :eq(w) deep equality; :near(w, tol=1e-5); :is(w) raw equality; :truthy(); :falsy();
-- :type(name); :gt(x) :ge(x) :lt(x) :le(x) for numbers; :matches(pattern) for strings (plain text).
function M.expect(v)
  local e = {}
  function e:eq(w) if not same(v, w) then fail("expected " .. show(w) .. ", got " .. show(v), 2) end return e end
  function e:near(w, tol)
    if not same(v, w, tol or 1e-5) then fail("expected " .. show(w) .. " (tol " .. (tol or 1e-5) .. "), got " .. show(v), 2) end
    return e
  end
  function e:is(w) if v ~= w then fail("expected " .. tostring(w) .. ", got " .. tostring(v), 2) end return e end
  function e:truthy() if not v then fail("expected a true value, got " .. tostring(v), 2) end return e end
  function e:falsy() if v then fail("expected a false value, got " .. tostring(v), 2) end return e end
  function e:type(name) if type(v) ~= name then fail("expected a " .. name .. ", got " .. type(v), 2) end return e end
  function e:gt(x) if not (v > x) then fail("expected > " .. tostring(x) .. ", got " .. tostring(v), 2) end return e end
  function e:ge(x) if not (v >= x) then fail("expected >= " .. tostring(x) .. ", got " .. tostring(v), 2) end return e end
  function e:lt(x) if not (v < x) then fail("expected < " .. tostring(x) .. ", got " .. tostring(v), 2) end return e end
  function e:le(x) if not (v <= x) then fail("expected <= " .. tostring(x) .. ", got " .. tostring(v), 2) end return e end
  function e:matches(s)
    if type(v) ~= "string" or not v:find(s, 1, true) then fail("expected text containing \"" .. s .. "\", got " .. tostring(v), 2) end
    return e
  end
  return e
end

-- raises(fn, ...texts): fn must raise an error whose message contains every text (plain);
-- returns the message.
function M.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then fail("expected an error, but the call succeeded", 2) end
  err = tostring(err)
  for _, s in ipairs { ... } do
    if not err:find(s, 1, true) then fail("error \"" .. err .. "\" does not mention \"" .. s .. "\"", 2) end
  end
  return err
end

-- check(cond, msg): a plain assertion.
function M.check(cond, msg) if not cond then fail(msg or "check failed", 2) end end

function M.describe(name, fn)
  path[#path + 1] = name
  fn()
  path[#path] = nil
end

function M.it(name, fn)
  local full = table.concat(path, " / ") .. (#path > 0 and " / " or "") .. name
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL " .. full .. "\n  " .. tostring(err):gsub("\n", "\n  "))
  end
end

-- Prints the summary line (the last line of the output) and raises when anything failed.
function M.finish()
  print(passed .. " passed, " .. failed .. " failed")
  if failed > 0 then error(failed .. " test(s) failed", 0) end
end

return M
