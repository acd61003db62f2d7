#!/bin/sh
# bench/to_csv.sh RESULTS.json: every measured series of a bench results file as CSV on
# stdout, one row per series (a command's metric, or a warm-start series), written by
# jq's @csv from the JSON (every object that carries raw "samples"):
#
#   section,case,series,metric,unit,n,median,p99,min,max
#
# section: the bench section; case: the path inside it (heap or working set, sub-run),
# "-" when none; series: the command; metric: what was measured (harness metric names,
# bench/README.md). Times in µs unless unit says otherwise.
set -eu
[ $# -eq 1 ] || { echo "usage: bench/to_csv.sh RESULTS.json" >&2; exit 2; }
echo "section,case,series,metric,unit,n,median,p99,min,max"
jq -r '
  .sections | to_entries[] | .key as $sec | .value
  | paths(type == "object" and has("samples")) as $p
  | getpath($p) as $m
  | ($p | map(tostring)) as $ps
  # harness files: ...commands[i].metrics[name]; warm.c files: ...series["who/metric"]
  | (if ($ps | index("commands")) then
        ($ps | index("commands")) as $i
        | [($ps[:$i] | join("/")), getpath($p[:$i + 2]).name, $ps[-1]]
     elif ($ps | index("series")) then
        ($ps | index("series")) as $i
        | [($ps[:$i] | join("/")), ($ps[-1] | split("/")[0]), ($ps[-1] | split("/")[1:] | join("/"))]
     else [($ps[:-1] | join("/")), "-", $ps[-1]] end) as $k
  | [$sec, (if $k[0] == "" then "-" else $k[0] end), $k[1], $k[2], ($m.unit // "us"), $m.n,
     ($m.median // $m.p50), $m.p99, $m.min, $m.max]
  | @csv' "$1"
