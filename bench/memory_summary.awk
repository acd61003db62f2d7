# bench/run.sh's memory section: reads the harness TSVs (memory-<ws>M.tsv: command,
# metric, unit, n, median, p99, min, max) and the snapshot sizes, prints one table per
# working-set size and the target checks, and writes the same numbers to `json` as
# "type<TAB>value<TAB>key<TAB>key..." lines (type n: number, empty for null; s: string;
# b: 1/0, empty for null; a key "#N" is an array index) that run.sh turns into JSON
# with jq (no JSON is pasted here).
#
#   awk -F'\t' -f bench/memory_summary.awk -v json=OUT -v sizes=FILE -v wslist="4 32 128" \
#       -v target_ws=32 memory-4M.tsv memory-32M.tsv ...
#
# sizes: lines "ws raw_logical raw_allocated lz4_payload lz4_index" (bytes).
# Commands: <backend>-warm / <backend>-cold for backend in mmap uffd uffd-pf lz4-pf eager.

function v(w, cmd, metric, stat,    k) {
	k = w SUBSEP cmd SUBSEP metric SUBSEP stat
	return (k in val) ? val[k] : ""
}
function ms(x) { return x == "" ? "-" : sprintf("%.1f", x / 1000) }
function mib(x) { return x == "" ? "-" : sprintf("%.1f", x / 1048576) }
function num(x) { return x == "" ? "-" : sprintf("%.0f", x) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
function fx(r) { return r == "" ? "-" : sprintf("%.2fx", r) }
function jn(x) { return x == "" ? "" : sprintf("%.1f", x) }
function jr(x) { return x == "" ? "" : sprintf("%.3f", x) }
# one value at path p (keys joined by tabs) of type t
function out(t, val, p) { printf "%s\t%s\t%s\n", t, val, p >> json }
function verdict(ok) { return ok == "" ? "not measured" : ok ? "ok" : "**MISSED**" }
function check(name, r, ok, detail) {
	printf "- %s: %s (%s)\n", name, r == "" ? "not measured" : verdict(ok), detail
	gsub(/[\t\n]/, " ", name)
	out("s", name, "targets\t#" (nchecks + 0) "\ttarget")
	out("n", jr(r), "targets\t#" (nchecks + 0) "\tratio")
	out("b", r == "" ? "" : ok ? 1 : 0, "targets\t#" (nchecks + 0) "\tok")
	nchecks++
}
# The fastest cold backend other than mmap: sets best_name, returns its median.
function best_cold(w,    i, m, best) {
	best = ""; best_name = ""
	for (i = 2; i <= nb; i++) {
		m = v(w, BK[i] "-cold", "first-response", "median")
		if (m != "" && (best == "" || m < best)) { best = m; best_name = BK[i] }
	}
	return best
}

BEGIN {
	nb = split("mmap uffd uffd-pf lz4-pf eager", BK, " ")
	label["mmap"] = "mmap (MAP_PRIVATE)"
	label["uffd"] = "uffd on demand"
	label["uffd-pf"] = "uffd + prefetch ws"
	label["lz4-pf"] = "lz4 + prefetch ws"
	label["eager"] = "eager full read"
	nw = split(wslist, WS, " ")
	while ((getline line < sizes) > 0) {
		split(line, f, " ")
		raw_logical[f[1]] = f[2]; raw_alloc[f[1]] = f[3]; lz4_bytes[f[1]] = f[4] + f[5]
	}
}
{
	match(FILENAME, /-[0-9]+M\.tsv$/)
	w = substr(FILENAME, RSTART + 1, RLENGTH - 6)
	val[w, $1, $2, "median"] = $5; val[w, $1, $2, "p99"] = $6; val[w, $1, $2, "n"] = $4
}
END {
	printf "" > json
	for (i = 1; i <= nw; i++) {
		w = WS[i]
		print ""
		printf "### memory summary: ws=%sM, restore -> first response (medians unless marked)\n\n", w
		# 80 columns: the pager's and the host's counters are in the JSON and the CSV
		print "| backend | cache | first resp. ms | p99 | vs mmap | resumed ms | 2nd req. ms |"
		print "|---|---|---:|---:|---:|---:|---:|"
		for (c = 0; c < 2; c++) {
			cache = c ? "cold" : "warm"
			base = v(w, "mmap-" cache, "first-response", "median")
			for (b = 1; b <= nb; b++) {
				cmd = BK[b] "-" cache
				fr = v(w, cmd, "first-response", "median")
				if (fr == "" && v(w, cmd, "exit (wall)", "median") == "")
					continue
				pf = v(w, cmd, "pager prefetch_us", "median")
				maj = v(w, cmd, "ru majflt", "median"); mn = v(w, cmd, "ru minflt", "median")
				printf "| %s | %s | %s | %s | %s | %s | %s |\n",
					label[BK[b]], cache, ms(fr), ms(v(w, cmd, "first-response", "p99")),
					BK[b] == "mmap" ? "1.00x" : fx(ratio(fr, base)),
					ms(v(w, cmd, "resumed", "median")),
					ms(v(w, cmd, "report serve #2 - #1", "median"))
				p = "per_ws\t" w "M\t" cmd "\t"
				out("n", jn(v(w, cmd, "first-response", "n")), p "runs")
				out("n", jn(fr), p "first_response_us")
				out("n", jn(v(w, cmd, "first-response", "p99")), p "first_response_p99_us")
				out("n", jn(v(w, cmd, "first-response - first-report", "median")), p "guest_request_us")
				out("n", jn(v(w, cmd, "report serve #2 - #1", "median")), p "second_request_us")
				out("n", jn(v(w, cmd, "resumed", "median")), p "resumed_us")
				out("n", jn(v(w, cmd, "pager faults", "median")), p "pager_faults")
				out("n", jn(v(w, cmd, "pager bytes_read", "median")), p "pager_bytes_read")
				out("n", jn(v(w, cmd, "ru read", "median")), p "disk_read_bytes")
				out("n", jn(maj), p "majflt")
				out("n", jn(mn), p "minflt")
				out("n", jn(pf), p "prefetch_us")
				out("n", jr(ratio(fr, base)), p "ratio_vs_mmap_same_cache")
			}
		}
	}

	print ""
	print "### memory: ratios per working-set size (first-response medians; targets apply at ws=" target_ws "M)"
	print ""
	# one row per ratio, one column per working set: 80 columns for three sizes
	rl[1] = "uffd on demand / uffd+prefetch, warm"; rl[2] = "uffd+prefetch / mmap, warm"
	rl[3] = "mmap cold / best cold"; rl[4] = "lz4+pf / raw+pf, warm"; rl[5] = "lz4+pf / raw+pf, cold"
	rl[6] = "raw file allocated / lz4 file"; rl[7] = "raw logical / lz4 file"
	for (i = 1; i <= nw; i++) {
		w = WS[i]
		r_od[w] = ratio(v(w, "uffd-warm", "first-response", "median"), v(w, "uffd-pf-warm", "first-response", "median"))
		r_od_c[w] = ratio(v(w, "uffd-cold", "first-response", "median"), v(w, "uffd-pf-cold", "first-response", "median"))
		r_mm[w] = ratio(v(w, "uffd-pf-warm", "first-response", "median"), v(w, "mmap-warm", "first-response", "median"))
		r_cold[w] = ratio(v(w, "mmap-cold", "first-response", "median"), best_cold(w)); best[w] = best_name
		r_lz[w] = ratio(v(w, "lz4-pf-warm", "first-response", "median"), v(w, "uffd-pf-warm", "first-response", "median"))
		r_lz_c[w] = ratio(v(w, "lz4-pf-cold", "first-response", "median"), v(w, "uffd-pf-cold", "first-response", "median"))
		r_sz[w] = ratio(raw_alloc[w], lz4_bytes[w]); r_szl[w] = ratio(raw_logical[w], lz4_bytes[w])
		cell[1, i] = fx(r_od[w]); cell[2, i] = fx(r_mm[w])
		cell[3, i] = fx(r_cold[w]) " (" (best[w] == "" ? "-" : best[w]) ")"
		cell[4, i] = fx(r_lz[w]); cell[5, i] = fx(r_lz_c[w]); cell[6, i] = fx(r_sz[w]); cell[7, i] = fx(r_szl[w])
		p = "ratios\t" w "M\t"
		out("n", jr(r_od[w]), p "ondemand_vs_prefetch_warm")
		out("n", jr(r_od_c[w]), p "ondemand_vs_prefetch_cold")
		out("n", jr(r_mm[w]), p "prefetch_vs_mmap_warm")
		out("n", jr(r_cold[w]), p "mmap_cold_vs_best_cold")
		out("s", best[w], p "best_cold")
		out("n", jr(r_lz[w]), p "lz4_vs_raw_prefetch_warm")
		out("n", jr(r_lz_c[w]), p "lz4_vs_raw_prefetch_cold")
		out("n", jn(raw_logical[w]), p "raw_logical_bytes")
		out("n", jn(raw_alloc[w]), p "raw_allocated_bytes")
		out("n", jn(lz4_bytes[w]), p "lz4_bytes")
		out("n", jr(r_sz[w]), p "raw_allocated_vs_lz4")
		out("n", jr(r_szl[w]), p "raw_logical_vs_lz4")
	}
	printf "| ratio |"
	for (i = 1; i <= nw; i++) printf " ws %sM |", WS[i]
	printf "\n|---|"
	for (i = 1; i <= nw; i++) printf "---:|"
	printf "\n"
	for (r = 1; r <= 7; r++) {
		printf "| %s |", rl[r]
		for (i = 1; i <= nw; i++) printf " %s |", cell[r, i]
		printf "\n"
	}
	out("s", target_ws "M", "targets_ws")
	# the image is the same for every ws (only the cmdline differs): any snapshot will do
	w = (target_ws in raw_alloc) ? target_ws : WS[1]
	print ""
	if (raw_alloc[w] > 0 && raw_logical[w] > 0)
		printf "lz4 ratio of the sandbox memory (ws=%sM snapshot): %s MiB compressed (payload + index) of %s MiB " \
			"logical (%.1f%%) and %s MiB allocated by the raw file (%.1f%%)\n", w, mib(lz4_bytes[w]),
			mib(raw_logical[w]), 100 * lz4_bytes[w] / raw_logical[w], mib(raw_alloc[w]),
			100 * lz4_bytes[w] / raw_alloc[w]
	w = target_ws
	print ""
	print "Targets (ws=" w "M, first-response medians):"
	check("uffd + prefetch >= 3x faster than uffd on demand (warm)", r_od[w], r_od[w] >= 3,
		fx(r_od[w]) "; cold " fx(r_od_c[w]) "; REAP reports 3.7x")
	check("uffd + prefetch within 1.5x of mmap with a warm page cache", r_mm[w], r_mm[w] <= 1.5, fx(r_mm[w]))
	check("cold page cache: the best backend >= 2x faster than mmap", r_cold[w], r_cold[w] >= 2,
		fx(r_cold[w]) ", best cold: " (best[w] == "" ? "-" : best[w]))
	check("lz4 + prefetch within 1.3x of raw + prefetch (warm)", r_lz[w], r_lz[w] <= 1.3, fx(r_lz[w]))
	check("lz4 + prefetch within 1.3x of raw + prefetch (cold)", r_lz_c[w], r_lz_c[w] <= 1.3, fx(r_lz_c[w]))
	check("lz4 file >= 2x smaller than the raw file (allocated bytes)", r_sz[w], r_sz[w] >= 2,
		fx(r_sz[w]) "; vs its logical size " fx(r_szl[w]))
}
