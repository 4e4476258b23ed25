package loadtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU is the processor time spent during a phase: by this process (the
// load's client, and the gateway when it runs in process) and by the local
// database server. On two cores the sum per request bounds the throughput,
// so it says where the time goes. Read from /proc (Linux); zero elsewhere.
type CPU struct {
	Self, DB time.Duration
	DBKnown  bool
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuMeter reads the two processes' times.
type cpuMeter struct{ dbPID string }

func newCPUMeter(driver string) *cpuMeter {
	m := &cpuMeter{}
	if driver == "mysql" {
		m.dbPID = findProcess("mariadbd", "mysqld")
	}
	return m
}

func (m *cpuMeter) read() CPU {
	c := CPU{Self: procTime("self")}
	if m.dbPID != "" {
		c.DB, c.DBKnown = procTime(m.dbPID), true
	}
	return c
}

// add accumulates the time between two readings.
func (c *CPU) add(from, to CPU) {
	c.Self += to.Self - from.Self
	c.DB += to.DB - from.DB
	c.DBKnown = to.DBKnown
}

// procTime is user + system time of /proc/PID, 0 when unreadable.
func procTime(pid string) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis (utime and stime are 14 and 15).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * clockTick
}

// findProcess returns the PID of the first process with one of names.
func findProcess(names ...string) string {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		for _, n := range names {
			if comm == n {
				return filepath.Base(filepath.Dir(d))
			}
		}
	}
	return ""
}
