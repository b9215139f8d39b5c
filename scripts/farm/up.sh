#!/usr/bin/env bash
# scripts/farm/up.sh [options] — see: python3 scripts/farm/farm.py --help
exec python3 "$(dirname "$(readlink -f "$0")")/farm.py" up "$@"
