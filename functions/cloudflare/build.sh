#!/usr/bin/env bash
# Builds the Worker into functions/cloudflare/build/ (the pages into build/assets/) with nothing
# but the registries: worker-build and wasm-bindgen-cli from crates.io (installed by .ci/run;
# wasm-bindgen at the exact version in Cargo.lock), wasm-opt (binaryen) and esbuild from npm
# (`npm ci` here). worker-build would otherwise download them from GitHub.
set -euo pipefail
cd "$(dirname "$0")"
tools="${LIVESHOP_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/liveshop-tools}"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$tools/bin/wasm-bindgen}"
export WORKER_BUILD_BIN="${WORKER_BUILD_BIN:-$tools/bin/worker-build}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
[ -d node_modules/esbuild ] || npm ci --no-audit --no-fund
# Its own target directory: workers-rs never shares a build with the main workspace.
export CARGO_TARGET_DIR="${CLOUDFLARE_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}-cloudflare}"
# --locked: the committed Cargo.lock is what gets built (and what wasm-bindgen-cli must match).
"$WORKER_BUILD_BIN" --release --locked "$@"
# The pages of web/ as static assets under /web/ (wrangler.toml [assets]), the files the edge node
# serves: not player.js (the media origin's, at /media/player.js), nor npm's files.
rm -rf build/assets
mkdir -p build/assets/web
find ../../web -maxdepth 1 -type f \( -name '*.html' -o -name '*.css' -o -name '*.js' \) ! -name player.js \
    -exec cp {} build/assets/web/ \;
# The charts' library from npm (web/package.json), where the edge node serves it: /web/vendor/.
[ -f ../../web/node_modules/uplot/dist/uPlot.iife.min.js ] || (cd ../../web && npm ci --no-audit --no-fund)
mkdir -p build/assets/web/vendor
cp ../../web/node_modules/uplot/dist/uPlot.iife.min.js build/assets/web/vendor/uplot.js
cp ../../web/node_modules/uplot/dist/uPlot.min.css build/assets/web/vendor/uplot.css
# The headers every response of the node has (liveshop_room::pages::COMMON_HEADERS; the Worker
# sets them on what it serves itself), for the assets served without it.
printf '/*\n  X-Content-Type-Options: nosniff\n  Referrer-Policy: no-referrer\n' > build/assets/_headers
# A page's HTML file fetched as a plain asset is inert and unframeable
# (liveshop_room::pages::RAW_PAGE_POLICY); the Worker's /watch, /dashboard and report pages replace
# the policy.
for page in viewer dashboard report; do
    printf "/web/$page.html\n  Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\n"
done >> build/assets/_headers
