package service

import (
	"context"

	"github.com/sirupsen/logrus"
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

// Scheduler runs the jobs. TEMPORARY: the jobs issue replaces this file.
type Scheduler struct{}

// NewScheduler builds the scheduler.
func NewScheduler(s *Service, sched Schedules, log logrus.FieldLogger) (*Scheduler, error) {
	return &Scheduler{}, nil
}

// Start starts the schedules.
func (j *Scheduler) Start() {}

// Stop stops taking work and waits for runs in flight within ctx.
func (j *Scheduler) Stop(ctx context.Context) error { return nil }
