package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// cpuProbe measures what a run costs in CPU: the server's (the
// process_cpu_seconds_total its /metrics page reports), this process's
// own, and the share of the whole machine that was busy. On a machine
// whose cores are all busy the throughput follows the CPU a call costs,
// so these say where a call's time goes when the ratios do not.
type cpuProbe struct {
	serverMetrics        string
	server, load         float64 // seconds at the start
	machineBusy, machTot uint64  // /proc/stat jiffies at the start
}

func startCPU(serverMetrics string) cpuProbe {
	p := cpuProbe{serverMetrics: serverMetrics, load: selfCPU()}
	if serverMetrics != "" {
		p.server = metric(serverMetrics, "process_cpu_seconds_total")["process_cpu_seconds_total"]
	}
	p.machineBusy, p.machTot = machineCPU()
	return p
}

// stop writes the CPU per call into r. other is CPU spent on the load's
// side by another process (etcd's benchmark tool), in seconds.
func (p cpuProbe) stop(r *result, other float64) {
	if r.Requests == 0 {
		return
	}
	busy, tot := machineCPU()
	if p.serverMetrics != "" {
		if s, ok := metric(p.serverMetrics, "process_cpu_seconds_total")["process_cpu_seconds_total"]; ok && s > p.server {
			r.ServerCPUUs = (s - p.server) / float64(r.Requests) * 1e6
		}
	}
	r.LoadCPUUs = (selfCPU() - p.load + other) / float64(r.Requests) * 1e6
	if tot > p.machTot {
		r.MachineBusyPct = float64(busy-p.machineBusy) / float64(tot-p.machTot) * 100
	}
}

// selfCPU is the user and system CPU this process has used, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// machineCores is how many cores /proc/stat counts: the machine's, which
// its busy share is of, even when this process is held to fewer
// (taskset), as runtime.NumCPU would be.
func machineCores() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) > 3 && strings.HasPrefix(line, "cpu") && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// machineCPU reads the machine's busy and total jiffies from /proc/stat
// (busy: all but idle and waiting for the disk); zeros where there is no
// /proc.
func machineCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseUint(s, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
