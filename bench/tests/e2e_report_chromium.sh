#!/usr/bin/env bash
# bench/tests/e2e_report_chromium.sh: renders a wb report in headless Chromium and checks that
# it loads without console errors, that its plots are in the DOM, that the table sorter works
# when a header is clicked, and that a screenshot is not blank.
#
#   bash bench/tests/e2e_report_chromium.sh WB_BINARY REPO_ROOT
#
# Exit 77 (skipped) when chromium is not installed. The store comes from `wb run` on a tiny
# Lua script (two groups x three seeds, a NaN in one curve, params with commas, quotes and
# markup, a FAILED run with a hostile error string), the report from `wb report`.
set -u

WB=${1:?usage: e2e_report_chromium.sh WB_BINARY REPO_ROOT}
ROOT=${2:?usage: e2e_report_chromium.sh WB_BINARY REPO_ROOT}
: "$ROOT"
case $WB in /*) ;; *) WB="$PWD/$WB" ;; esac

if ! command -v chromium >/dev/null 2>&1; then
  echo "skipped: chromium not installed"
  exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "skipped: python3 not installed (needed to inspect the screenshot)"
  exit 77
fi

TMP=$(mktemp -d /tmp/wb_e2e_report_XXXXXX)
if [ -n "${WB_TEST_KEEP:-}" ]; then
  echo "keeping $TMP"
else
  trap 'rm -rf "$TMP"' EXIT
fi
passed=0
failed=0
lacks() { # lacks REGEX FILE: true when FILE has no match
  ! grep -Eq "$1" "$2"
}
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $what"
  fi
}

cat >"$TMP/curves.lua" <<'LUA'
local wb = require "wb"
local opt = wb.args { lr = 0.1, seed = 1, note = "plain" }
local run <close> = wb.experiment { name = "e2e report", params = opt }
local failing = os.getenv("WB_E2E_FAIL") ~= nil
for step = 0, failing and 1 or 9 do
  local loss = 1 / (step + 1) / opt.lr / 10 + opt.seed * 0.01
  if opt.lr == 0.1 and opt.seed == 2 and step == 3 then loss = 0 / 0 end
  run:log(step, { ["train/loss"] = loss })
  if step % 3 == 0 and not failing then
    run:log(step, { ["eval/acc"] = 0.5 + step * 0.04 * opt.lr - opt.seed * 0.01 })
  end
end
if failing then error("<script>alert(1)</script> & | x") end
LUA
DB="$TMP/wb.sqlite"
HTML="$TMP/report.html"
(
  cd "$TMP" || exit 1
  for lr in 0.1 0.2; do
    for seed in 1 2 3; do
      "$WB" run curves.lua --db "$DB" --lr $lr --seed $seed --note 'a, "b" <c>' >>run.log 2>&1 ||
        { echo "wb run failed:"; cat run.log; exit 1; }
    done
  done
  if WB_E2E_FAIL=1 "$WB" run curves.lua --db "$DB" --lr 0.1 --seed 4 --note 'a, "b" <c>' \
    >>run.log 2>&1; then
    echo "the failing run exited 0"
    exit 1
  fi
  "$WB" report --db "$DB" -o "$HTML" >>run.log 2>&1 ||
    { echo "wb report failed:"; cat run.log; exit 1; }
) || { echo "FAIL: could not produce the report"; exit 1; }
check "report written" test -s "$HTML"
check "Markdown twin written" test -s "$TMP/report.md"
check "Markdown escapes the error's markup and pipe" \
  grep -q 'alert(1)&lt;/script&gt; &amp; \\| x' "$TMP/report.md"

# A copy with a test script appended: clicks the "mean" header of the first metric table
# (eval/acc: group means 0.516 for lr 0.1 and 0.552 for lr 0.2) twice and records the first
# row after each click.
python3 - "$HTML" "$TMP/sorttest.html" <<'EOF'
import sys
html = open(sys.argv[1], encoding="utf-8").read()
probe = """<script>
(function(){
  var t = document.querySelectorAll('table.sortable')[1];
  var th = t.tHead.rows[0].cells[3];
  th.click(); var a = t.tBodies[0].rows[0].cells[3].textContent;
  th.click(); var d = t.tBodies[0].rows[0].cells[3].textContent;
  document.body.setAttribute('data-sorttest', th.textContent + '|' + a + '|' + d);
})();
</script>"""
assert html.count("</body>") == 1
open(sys.argv[2], "w", encoding="utf-8").write(html.replace("</body>", probe + "</body>"))
EOF

CHROME=(chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0
  --no-first-run --disable-extensions --host-resolver-rules="MAP * ~NOTFOUND")

# 1. the DOM after scripts ran, and the console
timeout 120 "${CHROME[@]}" --dump-dom "file://$HTML" >"$TMP/dom.html" 2>"$TMP/dom.err"
check "chromium --dump-dom exit status" test $? -eq 0
# the report logs nothing, so any console line is an error (uncaught exceptions included)
if grep -E "CONSOLE|Uncaught" "$TMP/dom.err" >/dev/null; then
  echo "console output:"
  grep -E "CONSOLE|Uncaught" "$TMP/dom.err"
  check "no console errors" false
else
  check "no console errors" true
fi
# bars of eval/acc and train/loss, and for each a per-run and a per-group curve plot
nsvg=$(grep -o "<svg" "$TMP/dom.html" | wc -l)
check "6 svg plots in the DOM (found $nsvg)" test "$nsvg" -eq 6
npoly=$(grep -o "<polyline" "$TMP/dom.html" | wc -l)
check "curves in the DOM (found $npoly polylines)" test "$npoly" -ge 14
check "no raw hostile string in the DOM" lacks "<script>alert" "$TMP/dom.html"
check "the hostile error is shown as text" \
  grep -q '&lt;script&gt;alert(1)&lt;/script&gt; &amp; | x' "$TMP/dom.html"
check "no network reference" lacks "https?://" "$TMP/dom.html"

# 2. the sorter, driven by clicks
timeout 120 "${CHROME[@]}" --dump-dom "file://$TMP/sorttest.html" >"$TMP/sort.html" \
  2>"$TMP/sort.err"
sorttest=$(grep -o 'data-sorttest="[^"]*"' "$TMP/sort.html")
check "sorting by mean: ascending then descending (got: $sorttest)" \
  test "$sorttest" = 'data-sorttest="mean|0.516|0.552"'
check "no console errors while sorting" lacks "CONSOLE|Uncaught" "$TMP/sort.err"

# 3. a screenshot that shows the plots
timeout 120 "${CHROME[@]}" --window-size=1280,2400 --screenshot="$TMP/shot.png" "file://$HTML" \
  >"$TMP/shot.out" 2>"$TMP/shot.err"
check "screenshot written" test -s "$TMP/shot.png"
if [ -s "$TMP/shot.png" ]; then
  # Decodes the PNG (zlib and the five row filters, stdlib only) and measures it: the page is
  # mostly white, but plots bring a real share of ink and the palette's blue and orange.
  out=$(python3 - "$TMP/shot.png" <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), "unexpected PNG format %d/%d" % (depth, ctype)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
ink = blue = orange = 0
rows = 0
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    rows += 1
    for x in range(0, w, 2):
        r, g, bl = line[x * bpp], line[x * bpp + 1], line[x * bpp + 2]
        if r < 235 or g < 235 or bl < 235: ink += 1
        if bl > r + 80 and bl > 120: blue += 1
        if r > bl + 100 and r > 180: orange += 1
total = rows * ((w + 1) // 2)
print("%dx%d ink=%.4f blue=%d orange=%d bytes=%d" % (w, h, ink / total, blue, orange, len(data)))
ok = len(data) > 20000 and ink / total > 0.02 and blue > 500 and orange > 500
sys.exit(0 if ok else 1)
EOF
  )
  rc=$?
  echo "screenshot: $out"
  check "screenshot is not blank ($out)" test $rc -eq 0
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
