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

	"github.com/procurement/gateway/model"
)

// Job names, as in config.yaml's jobs: section, the logs and the metrics.
const (
	JobPollPending     = "poll_pending"
	JobRecoverApplying = "recover_applying"
	JobPullFiles       = "pull_files"
	JobDeliverOutbox   = "deliver_outbox"
	JobReconcile       = "reconcile"
	JobRetention       = "retention"
)

// Schedules are the cron specs of the jobs (config.yaml jobs:).
type Schedules struct {
	Disabled        bool
	PollPending     string
	RecoverApplying string
	PullFiles       string
	DeliverOutbox   string
	Reconcile       string
	Retention       string
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
//
// Each job's work on one row reads in its own file: poll.go, recover.go,
// pull.go, deliver.go, reconcile.go, retention.go; runner.go moves the claimed rows
// through the calls.
type Scheduler struct {
	s     *Service
	log   logrus.FieldLogger
	cron  *cron.Cron
	specs map[string]cron.Schedule
	jobs  map[string]func(context.Context) (JobStats, error)
	// running keeps a job from overlapping itself in this instance when a
	// run outlasts its interval.
	running map[string]*atomic.Bool
	// slots bound the calls to each institution at once, across the jobs
	// of this instance (Institution.MaxConcurrent).
	slots map[string]chan struct{}

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
		running: map[string]*atomic.Bool{}, slots: map[string]chan struct{}{}, ctx: ctx, cancel: cancel}
	j.jobs = map[string]func(context.Context) (JobStats, error){
		JobPollPending:     j.pollPending,
		JobRecoverApplying: j.recoverApplying,
		JobPullFiles:       j.pullFiles,
		JobDeliverOutbox:   j.deliverOutbox,
		JobReconcile:       j.reconcile,
		JobRetention:       j.retention,
	}
	for name := range j.jobs {
		j.running[name] = &atomic.Bool{}
	}
	for _, in := range s.insts.All() {
		j.slots[in.OrgCode] = make(chan struct{}, in.MaxConcurrent)
	}
	// Schedules are read in UTC, like every time the gateway keeps: the
	// reconciliation of "0 2 * * *" runs at 02:00 UTC and is filed under
	// that UTC day, whatever the host's time zone.
	j.cron = cron.New(cron.WithParser(scheduleParser), cron.WithLocation(time.UTC),
		cron.WithChain(cron.Recover(cronLogger{j.log})))
	for _, e := range []struct{ name, spec string }{
		{JobPollPending, sched.PollPending}, {JobRecoverApplying, sched.RecoverApplying},
		{JobPullFiles, sched.PullFiles}, {JobDeliverOutbox, sched.DeliverOutbox}, {JobReconcile, sched.Reconcile},
		{JobRetention, sched.Retention},
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
	var orders, deliveries int64
	rerr := j.s.store.Do(model.WithOp(rctx, "release_lease"), func(q model.Queries) (err error) {
		orders, deliveries, err = q.ReleaseInstance(j.s.set.Instance)
		return err
	})
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

// claimToken names one claim: this instance, the job, and a random part,
// so that every write after the call can be conditioned on still holding
// the lease, and the instance's leases are found by their prefix at
// shutdown (model.ReleaseInstance).
func (s *Service) claimToken(job string) string {
	var b [6]byte
	rand.Read(b[:])
	return s.set.Instance + "/" + job + "/" + hex.EncodeToString(b[:])
}

// acquire takes a call slot of the institution, or reports false when ctx
// ends first. An unknown institution has no bound (its calls fail anyway).
func (j *Scheduler) acquire(ctx context.Context, org string) (release func(), ok bool) {
	slots := j.slots[org]
	if slots == nil {
		return func() {}, true
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	case <-ctx.Done():
		return nil, false
	}
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
