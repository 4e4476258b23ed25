package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/sirupsen/logrus"
)

// Job names, as in config.yaml's jobs: section, the logs and the metrics.
const (
	JobPollPending     = "poll_pending"
	JobRecoverApplying = "recover_applying"
	JobPullFiles       = "pull_files"
	JobDeliverOutbox   = "deliver_outbox"
	JobReconcile       = "reconcile"
)

// Schedules are the cron specs of the jobs (config.yaml jobs:).
type Schedules struct {
	Disabled        bool
	PollPending     string
	RecoverApplying string
	PullFiles       string
	DeliverOutbox   string
	Reconcile       string
}

// scheduleParser reads what config validates: five fields or a descriptor
// such as "@every 30s".
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ErrStopping is returned by RunOnce once Stop has been called.
var ErrStopping = errors.New("jobs: the scheduler is stopping")

// JobStats is what one run of a job did.
type JobStats struct {
	Job      string
	Claimed  int // rows this run took (leased, or claimed one by one)
	Done     int // rows whose work succeeded and was stored
	Failed   int // rows whose call or storage failed; their back-off advanced
	Flagged  int // rows flagged for operators instead of worked (stale)
	Released int // rows taken but handed back unworked (shutdown, lease ran short)
	// Skipped: the run did nothing because the same job was still running
	// here, or another instance holds the job's lease.
	Skipped  bool
	Duration time.Duration
}

// Scheduler runs the jobs on their schedules. Several instances may run one
// each over the same database: every job claims its rows with leases (see
// model/leases.go), and the daily reconciliation runs under a job lease.
type Scheduler struct {
	s     *Service
	log   logrus.FieldLogger
	cron  *cron.Cron
	specs map[string]cron.Schedule
	jobs  map[string]func(context.Context) (JobStats, error)
	// running keeps a job from overlapping itself in this instance when a
	// run outlasts its interval.
	running map[string]*atomic.Bool
	// sems bound the calls to each institution at once, across the jobs of
	// this instance (Institution.MaxConcurrent).
	sems map[string]chan struct{}

	// ctx is every run's parent; cancelled when Stop's deadline passes.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // orders stopping against runs.Add
	stopping atomic.Bool
	runs     sync.WaitGroup
}

// NewScheduler builds the scheduler of s's jobs. A schedule that does not
// parse is an error naming the job; an empty one leaves that job off the
// schedule (it can still be run with RunOnce). With sched.Disabled nothing
// is scheduled in this instance.
func NewScheduler(s *Service, sched Schedules, log logrus.FieldLogger) (*Scheduler, error) {
	ctx, cancel := context.WithCancel(context.Background())
	j := &Scheduler{s: s, log: log.WithField("component", "jobs"), specs: map[string]cron.Schedule{},
		running: map[string]*atomic.Bool{}, sems: map[string]chan struct{}{}, ctx: ctx, cancel: cancel}
	j.jobs = map[string]func(context.Context) (JobStats, error){
		JobPollPending:     j.pollPending,
		JobRecoverApplying: j.recoverApplying,
		JobPullFiles:       j.pullFiles,
		JobDeliverOutbox:   j.deliverOutbox,
		JobReconcile:       j.reconcile,
	}
	for name := range j.jobs {
		j.running[name] = &atomic.Bool{}
	}
	for _, in := range s.insts.All() {
		n := in.MaxConcurrent
		if n < 1 {
			n = 8
		}
		j.sems[in.OrgCode] = make(chan struct{}, n)
	}
	// Schedules are read in UTC, like every time the gateway keeps: the
	// reconciliation of "0 2 * * *" runs at 02:00 UTC and is filed under
	// that UTC day, whatever the host's time zone.
	j.cron = cron.New(cron.WithParser(scheduleParser), cron.WithLocation(time.UTC),
		cron.WithChain(cron.Recover(cronLogger{j.log})))
	for _, e := range []struct{ name, spec string }{
		{JobPollPending, sched.PollPending}, {JobRecoverApplying, sched.RecoverApplying},
		{JobPullFiles, sched.PullFiles}, {JobDeliverOutbox, sched.DeliverOutbox}, {JobReconcile, sched.Reconcile},
	} {
		if e.spec == "" {
			continue
		}
		sc, err := scheduleParser.Parse(e.spec)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("jobs.%s: unparseable schedule %q: %w", e.name, e.spec, err)
		}
		j.specs[e.name] = sc
		if sched.Disabled {
			continue
		}
		name := e.name
		j.cron.Schedule(sc, cron.FuncJob(func() { j.RunOnce(j.ctx, name) }))
	}
	return j, nil
}

// Start starts the schedules. Runs begin at the first due time, not at once.
func (j *Scheduler) Start() {
	if len(j.cron.Entries()) > 0 {
		j.cron.Start()
	}
}

// Stop stops taking work: no new run starts, running ones claim no more rows
// and hand back what they claimed but did not start. Calls in flight finish
// within ctx; when ctx ends first they are cancelled. Then every lease this
// instance still holds is released, so that the other instances take the
// rows over at once instead of when the leases run out. It returns ctx's
// error when runs were still in flight at its deadline.
func (j *Scheduler) Stop(ctx context.Context) error {
	j.mu.Lock()
	j.stopping.Store(true)
	j.mu.Unlock()
	j.cron.Stop()

	done := make(chan struct{})
	go func() {
		j.runs.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("jobs: runs still in flight at the shutdown deadline: %w", ctx.Err())
		j.cancel()
		// Cancelled calls return promptly; do not hold shutdown for long.
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	j.cancel()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	orders, deliveries, rerr := j.s.store.With(rctx).ReleaseOwner(j.s.set.Owner)
	if rerr != nil {
		j.log.WithError(rerr).Error("leases not released at shutdown; they run out by themselves")
	} else {
		j.log.WithFields(logrus.Fields{"orders": orders, "deliveries": deliveries}).Info("jobs stopped, leases released")
	}
	return errors.Join(err, rerr)
}

// RunOnce runs one job now and waits for it: what the schedule does at each
// due time, and what tests and operators call directly. A job already
// running in this instance is not started again (Skipped). Returns
// ErrStopping after Stop, or the error that ended the run early (its
// counts say what was done until then).
func (j *Scheduler) RunOnce(ctx context.Context, job string) (JobStats, error) {
	fn, ok := j.jobs[job]
	if !ok {
		return JobStats{Job: job}, fmt.Errorf("jobs: unknown job %q", job)
	}
	j.mu.Lock()
	if j.stopping.Load() {
		j.mu.Unlock()
		return JobStats{Job: job, Skipped: true}, ErrStopping
	}
	j.runs.Add(1)
	j.mu.Unlock()
	defer j.runs.Done()

	flag := j.running[job]
	if !flag.CompareAndSwap(false, true) {
		j.log.WithField("job", job).Debug("job still running; this run skipped")
		j.s.metrics.JobRun(job, "skipped", 0)
		return JobStats{Job: job, Skipped: true}, nil
	}
	defer flag.Store(false)

	// The run ends when its caller's ctx ends or when Stop's deadline passes.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(j.ctx, cancel)()

	start := time.Now()
	st, err := fn(ctx)
	st.Job, st.Duration = job, time.Since(start)
	j.report(st, err)
	return st, err
}

// report logs and counts one run. A run that found nothing to do is logged
// at debug level: with several jobs every few seconds, info would be noise.
func (j *Scheduler) report(st JobStats, err error) {
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case st.Skipped:
		result = "skipped"
	}
	j.s.metrics.JobRun(st.Job, result, st.Duration)
	e := j.log.WithFields(logrus.Fields{"job": st.Job, "claimed": st.Claimed, "done": st.Done, "failed": st.Failed,
		"flagged": st.Flagged, "released": st.Released, "skipped": st.Skipped, "duration_ms": st.Duration.Milliseconds()})
	switch {
	case err != nil:
		e.WithError(err).Error("job run failed")
	case st.Claimed > 0 || st.Failed > 0:
		e.Info("job run")
	default:
		e.Debug("job run")
	}
}

// token names one claim: this instance, the job, and a random part, so that
// every write after the call can be conditioned on still holding the lease.
func (j *Scheduler) token(job string) string {
	var b [6]byte
	rand.Read(b[:])
	return j.s.set.Owner + "/" + job + "/" + hex.EncodeToString(b[:])
}

// acquire takes a call slot of the institution, or reports false when ctx
// ends first. An unknown institution has no bound (its calls fail anyway).
func (j *Scheduler) acquire(ctx context.Context, org string) (release func(), ok bool) {
	sem := j.sems[org]
	if sem == nil {
		return func() {}, true
	}
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, true
	case <-ctx.Done():
		return nil, false
	}
}

func (j *Scheduler) batchSize() int {
	if j.s.set.BatchSize > 0 {
		return j.s.set.BatchSize
	}
	return 100
}

func (j *Scheduler) concurrency() int {
	if j.s.set.Concurrency > 0 {
		return j.s.set.Concurrency
	}
	return 8
}

func (j *Scheduler) lease() time.Duration {
	if j.s.set.Lease > 0 {
		return j.s.set.Lease
	}
	return 2 * time.Minute
}

// rowOutcome is what became of one claimed row.
type rowOutcome int

const (
	outDone     rowOutcome = iota
	outFailed              // back-off advanced
	outFlagged             // flagged for operators instead of worked
	outReleased            // handed back unworked
	outNotTaken            // another instance claimed it first (deliveries)
)

// finish is the part of a row's work left after its call: storing what
// follows from the answer (the next due time, the lease given back). It
// runs on the pipeline's finishing workers, so that a call slot is free for
// the next call as soon as the answer is in.
type finish func() rowOutcome

// pipeline runs one job's claimed rows through a fixed set of workers, as
// many as the job's concurrency: that many calls at most are in flight. A
// producer claims the next batch as soon as the workers have taken the last
// one, so the workers never wait for a whole batch to end (which would leave
// most of them idle at each batch's tail); the writes that follow a call
// run on a few finishing workers while the call slot takes the next row.
//
// fetch returns the next batch, or none when the run is over; org names a
// row's institution, bounded by its semaphore; work does one row and may
// leave a finish; release hands back a row not worked.
func pipeline[T any](ctx context.Context, j *Scheduler, fetch func(context.Context) ([]T, error),
	org func(T) string, work func(context.Context, T) (rowOutcome, finish), release func(T)) (JobStats, error) {
	var st JobStats
	items := make(chan T)
	// Written by the producer only, read once the workers are done.
	var fetchErr error
	var claimed, unsent int
	go func() {
		defer close(items)
		for !j.stopping.Load() && ctx.Err() == nil {
			batch, err := fetch(ctx)
			if err != nil {
				if ctx.Err() == nil { // a cancelled run just ends
					fetchErr = err
				}
				return
			}
			if len(batch) == 0 {
				return
			}
			claimed += len(batch)
			for i, it := range batch {
				select {
				case items <- it:
				case <-ctx.Done():
					for _, rest := range batch[i:] {
						release(rest)
					}
					unsent = len(batch) - i
					return
				}
			}
		}
	}()

	var mu sync.Mutex
	count := func(o rowOutcome) {
		mu.Lock()
		defer mu.Unlock()
		switch o {
		case outDone:
			st.Done++
		case outFailed:
			st.Failed++
		case outFlagged:
			st.Flagged++
		case outReleased:
			st.Released++
		case outNotTaken:
			st.Claimed--
		}
	}

	// A few finishing workers suffice: a write takes milliseconds where a
	// call takes tens or hundreds. The buffer lets a call slot hand over
	// without waiting; when the finishers fall behind, it fills and the
	// call slots wait (back-pressure), so leases are never outrun.
	finishers := max(2, j.concurrency()/4)
	finishes := make(chan finish, j.concurrency())
	var fwg sync.WaitGroup
	for range finishers {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for f := range finishes {
				count(safely(j, f))
			}
		}()
	}

	var wg sync.WaitGroup
	for range j.concurrency() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				if j.stopping.Load() || ctx.Err() != nil {
					release(it)
					count(outReleased)
					continue
				}
				done, ok := j.acquire(ctx, org(it))
				if !ok {
					release(it)
					count(outReleased)
					continue
				}
				var f finish
				o := safely(j, func() (o rowOutcome) { o, f = work(ctx, it); return o })
				done()
				if f != nil {
					finishes <- f
					continue
				}
				count(o)
			}
		}()
	}
	wg.Wait()
	close(finishes)
	fwg.Wait()
	// The producer closed items before the workers could finish, so claimed
	// and fetchErr are settled.
	st.Claimed += claimed
	st.Released += unsent
	return st, fetchErr
}

// safely runs one piece of a row's work; a panic there is logged and
// counted as a failure of that row instead of taking the process down (the
// row's lease runs out and another run retries it).
func safely(j *Scheduler, f func() rowOutcome) (o rowOutcome) {
	defer func() {
		if p := recover(); p != nil {
			j.log.WithField("panic", fmt.Sprint(p)).Error("job work panicked")
			o = outFailed
		}
	}()
	return f()
}

// cronLogger passes cron's own messages (a recovered panic) to logrus.
type cronLogger struct{ log logrus.FieldLogger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.WithFields(kvFields(kv)).Debug("cron: " + msg) }

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.WithFields(kvFields(kv)).WithError(err).Error("cron: " + msg)
}

func kvFields(kv []any) logrus.Fields {
	f := logrus.Fields{}
	for i := 0; i+1 < len(kv); i += 2 {
		f[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return f
}
