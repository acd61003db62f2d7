#!/bin/sh
# The bench's awk scripts hand their numbers over as lines, and jq writes the JSON (no
# JSON is pasted by hand): "type<TAB>value<TAB>key<TAB>key..." on stdin, type n a number
# (empty: null), s a string, b 1/0 (empty: null); a key "#N" is array index N. One JSON
# object on stdout, built from the object $1 (default {}; it fixes the order of the
# top-level keys).
#
#   printf 'n\t1.5\ta\tb\n' | bench/paths_to_json.sh '{"a": {}}'    -> {"a": {"b": 1.5}}
set -eu
jq -R -n --argjson init "${1:-"{}"}" '
	reduce (inputs | split("\t")) as $r ($init;
		setpath($r[2:] | map(if startswith("#") then .[1:] | tonumber else . end);
			$r[1] as $v | if $r[0] == "s" then $v
			elif $r[0] != "n" and $r[0] != "b" then
				error("paths_to_json: type \($r[0]) is none of n, s, b")
			elif $v == "" then null elif $r[0] == "b" then $v == "1" else $v | tonumber end))'
