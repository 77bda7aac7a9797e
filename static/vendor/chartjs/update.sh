#!/usr/bin/env bash
# Vendors Chart.js's minified UMD build through `npm pack` and pins it by sha256 in VERSION.
#
#   update.sh                  re-download the pinned version; fail unless it matches VERSION
#   update.sh --check          verify the vendored file against VERSION (no network)
#   update.sh --upgrade 4.a.b  vendor that version and rewrite VERSION
#
# The trailing `//# sourceMappingURL=` line is removed on the way in: we do not ship the
# .map, and Django's manifest static storage refuses a JS file that points at a missing one.
# The sha256 in VERSION is therefore of the vendored (stripped) file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="$here/chart.umd.min.js"
version_file="$here/VERSION"

usage() {
    echo "usage: $0 [--check | --upgrade 4.MINOR.PATCH]" >&2
    exit 2
}

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

pinned() {  # pinned version|sha256
    [[ -f "$version_file" ]] || { echo "missing $version_file" >&2; exit 1; }
    case "$1" in
        version) awk '$1 == "chart.js" { print $2 }' "$version_file" ;;
        sha256) awk '$1 == "sha256" { print $2 }' "$version_file" ;;
    esac
}

# fetch VERSION DEST: unpack that release into DEST/chart.umd.min.js and DEST/LICENSE.md.
fetch() {
    local version="$1" dest="$2" work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: $work is local
    trap "rm -rf '$work'" RETURN
    (cd "$work" && npm pack --silent "chart.js@$version" >/dev/null)
    tar -xzf "$work"/chart.js-"$version".tgz -C "$work"
    local dist="$work/package/dist" build
    # Early 4.x releases shipped the minified UMD build as chart.umd.js.
    if [[ -f "$dist/chart.umd.min.js" ]]; then
        build="$dist/chart.umd.min.js"
    elif [[ -f "$dist/chart.umd.js" ]]; then
        build="$dist/chart.umd.js"
    else
        echo "chart.js $version has no UMD build" >&2
        return 1
    fi
    sed '/^\/\/# sourceMappingURL=/d' "$build" >"$dest/chart.umd.min.js"
    cp "$work/package/LICENSE.md" "$dest/LICENSE.md"
}

check() {
    local want got version
    version="$(pinned version)"
    want="$(pinned sha256)"
    [[ -f "$target" ]] || { echo "missing $target" >&2; return 1; }
    got="$(sha256_of "$target")"
    if [[ -z "$want" || "$got" != "$want" ]]; then
        echo "sha256 mismatch for chart.umd.min.js: VERSION says ${want:-nothing}, file is $got" >&2
        return 1
    fi
    if ! head -c 200 "$target" | grep -q "Chart.js v$version"; then
        echo "chart.umd.min.js banner does not say Chart.js v$version" >&2
        return 1
    fi
    echo "chart.js $version ok"
}

case "${1:-}" in
    --check)
        [[ $# -eq 1 ]] || usage
        check
        ;;
    --upgrade)
        [[ $# -eq 2 && "$2" =~ ^4\.[0-9]+\.[0-9]+$ ]] || usage
        staging="$(mktemp -d)"
        trap 'rm -rf "$staging"' EXIT
        fetch "$2" "$staging"
        mv "$staging/chart.umd.min.js" "$target"
        mv "$staging/LICENSE.md" "$here/LICENSE.md"
        printf 'chart.js %s\nsha256 %s  chart.umd.min.js\n' "$2" "$(sha256_of "$target")" \
            >"$version_file"
        check
        ;;
    "")
        version="$(pinned version)"
        staging="$(mktemp -d)"
        trap 'rm -rf "$staging"' EXIT
        fetch "$version" "$staging"
        got="$(sha256_of "$staging/chart.umd.min.js")"
        if [[ "$got" != "$(pinned sha256)" ]]; then
            echo "chart.js $version from the registry hashes to $got, not the pinned" \
                "$(pinned sha256); left the vendored files alone" >&2
            exit 1
        fi
        mv "$staging/chart.umd.min.js" "$target"
        mv "$staging/LICENSE.md" "$here/LICENSE.md"
        check
        ;;
    *)
        usage
        ;;
esac
