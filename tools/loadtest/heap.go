package loadtest

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// Heap is what one request cost the process's heap.
//
// Method: with the gateway in this process, collect garbage (runtime.GC,
// twice, so that the baseline is live data only), read the runtime/metrics
// value "/memory/classes/heap/objects:bytes" (live objects plus dead ones
// not yet swept: the heap as the process holds it), then sample it every
// 250µs from a goroutine while the request runs, and take the highest
// sample. PeakGrowth is that peak minus the baseline. Allocated is the rise
// of "/gc/heap/allocs:bytes" over the request: every byte allocated, the
// growth the heap would see if no collection ran. The request body and its
// PDF are built before the baseline and stay referenced, so they are not
// counted; what the client allocates while sending (a few KiB of buffers)
// is.
type Heap struct {
	Base       uint64
	Peak       uint64
	PeakGrowth uint64
	Allocated  uint64
	GCs        uint64 // collections during the request
	Samples    int
}

const (
	heapObjects = "/memory/classes/heap/objects:bytes"
	heapAllocs  = "/gc/heap/allocs:bytes"
	gcCycles    = "/gc/cycles/total:gc-cycles"
)

// measureHeap runs fn and reports the heap it took.
func measureHeap(fn func()) Heap {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: heapObjects}, {Name: heapAllocs}, {Name: gcCycles}}
	metrics.Read(s)
	h := Heap{Base: s[0].Value.Uint64(), Peak: s[0].Value.Uint64()}
	allocs0, gcs0 := s[1].Value.Uint64(), s[2].Value.Uint64()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sample := []metrics.Sample{{Name: heapObjects}}
		for {
			metrics.Read(sample)
			h.Peak = max(h.Peak, sample[0].Value.Uint64())
			h.Samples++
			select {
			case <-stop:
				return
			default:
				time.Sleep(250 * time.Microsecond)
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()

	metrics.Read(s)
	h.Peak = max(h.Peak, s[0].Value.Uint64())
	h.PeakGrowth = h.Peak - h.Base
	h.Allocated = s[1].Value.Uint64() - allocs0
	h.GCs = s[2].Value.Uint64() - gcs0
	return h
}
