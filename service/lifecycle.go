package service

import (
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// The order lifecycle as one table: for each status, what each event does
// to the order. Every path that changes an order's status reads it: the
// apply and its answer (apply.go), a notice or a query answer, one by one
// (progress.go) or in a group commit (batch.go), a cancel (orders.go) and a
// release (callbacks.go). docs/api.md "Order lifecycle" describes it for
// the bidding module; lifecycle_test.go walks every pair through the paths
// that take it.

// event is what can happen to an order: what the institution answered or
// told, or what the bidding module asked for.
type event string

const (
	evApplyAccepted  event = "apply_accepted"  // /guarantee/apply answered stat 1
	evApplyRefused   event = "apply_refused"   // /guarantee/apply answered stat 0
	evProcessing     event = "processing"      // applynotify staus 2, or queryurl status 2
	evFailed         event = "failed"          // staus 0 / status 0
	evIssued         event = "issued"          // staus 1 / status 1
	evCancelAccepted event = "cancel_accepted" // cancelurl answered stat 1
	evSurrendered    event = "surrendered"     // release state 0 (退保)
	evCancelled      event = "cancelled"       // release state 1 (注销)
)

// events lists every event, for the tests that walk the table.
var events = []event{evApplyAccepted, evApplyRefused, evProcessing, evFailed, evIssued,
	evCancelAccepted, evSurrendered, evCancelled}

// action is what an event does to an order in a given status.
type action int

const (
	// actRefuse: the event contradicts what is stored (failed after issued,
	// a release of an order never issued); it changes nothing and is
	// answered 200002 to an institution, 409 to the bidding module. An
	// event the table does not list for a status is refused.
	actRefuse action = iota
	// actMove: the order moves to the rule's status, with a conditional
	// UPDATE from this status, and an event is added to its history.
	actMove
	// actKeep: the order is there already, or the event tells nothing new
	// for it (the answer to an apply whose notice came first): nothing
	// moves; what the event carries that the order lacks is kept.
	actKeep
	// actLate: the order has moved past what the event says (processing
	// after issued); the notice is recorded as late and acknowledged, and
	// nothing changes. A status never moves backwards.
	actLate
	// actComplete: the guarantee was issued and is told again: the notice
	// may bring what the first lacked (the bhno, the PDF, the time); a
	// different bhno is refused (progress.go).
	actComplete
)

// rule is one cell of the table.
type rule struct {
	act action
	to  model.Status // for actMove
}

func moveTo(st model.Status) rule { return rule{act: actMove, to: st} }

var lifecycle = map[model.Status]map[event]rule{
	model.StatusApplying: {
		evApplyAccepted: moveTo(model.StatusProcessing),
		evApplyRefused:  moveTo(model.StatusApplyRejected),
		// A notice or an answer to a query before the apply's own answer:
		// the institution has the order.
		evProcessing: moveTo(model.StatusProcessing),
		evFailed:     moveTo(model.StatusFailed),
		evIssued:     moveTo(model.StatusIssued),
	},
	model.StatusApplyRejected: {
		evApplyAccepted: {act: actKeep},
		evApplyRefused:  {act: actKeep},
		evProcessing:    {act: actLate},
	},
	model.StatusProcessing: {
		evApplyAccepted: {act: actKeep}, // a notice came first; the URLs are learnt
		evApplyRefused:  {act: actKeep}, // the institution has it in hand all the same
		evProcessing:    {act: actKeep},
		evFailed:        moveTo(model.StatusFailed),
		evIssued:        moveTo(model.StatusIssued),
	},
	model.StatusIssued: {
		evApplyAccepted:  {act: actKeep},
		evApplyRefused:   {act: actKeep},
		evProcessing:     {act: actLate},
		evIssued:         {act: actComplete},
		evCancelAccepted: moveTo(model.StatusCancelling),
		evSurrendered:    moveTo(model.StatusSurrendered),
		evCancelled:      moveTo(model.StatusCancelled),
	},
	model.StatusFailed: {
		evApplyAccepted: {act: actKeep},
		evApplyRefused:  {act: actKeep},
		evProcessing:    {act: actLate},
		evFailed:        {act: actKeep},
	},
	model.StatusCancelling: {
		evApplyAccepted: {act: actKeep},
		evApplyRefused:  {act: actKeep},
		evProcessing:    {act: actLate},
		evIssued:        {act: actComplete},
		evSurrendered:   moveTo(model.StatusSurrendered),
		evCancelled:     moveTo(model.StatusCancelled),
	},
	model.StatusCancelled: {
		evApplyAccepted: {act: actKeep},
		evApplyRefused:  {act: actKeep},
		evProcessing:    {act: actLate},
		evIssued:        {act: actComplete},
	},
	model.StatusSurrendered: {
		evApplyAccepted: {act: actKeep},
		evApplyRefused:  {act: actKeep},
		evProcessing:    {act: actLate},
		evIssued:        {act: actComplete},
	},
}

// next is what ev does to an order in status st.
func next(st model.Status, ev event) rule {
	return lifecycle[st][ev] // the zero rule refuses
}

// movesFrom returns the statuses from which ev moves an order to `to`: the
// condition of the UPDATE that makes the move, so that a writer who moved
// the order meanwhile makes it match nothing.
func movesFrom(ev event, to model.Status) []model.Status {
	var from []model.Status
	for _, st := range model.AllStatuses {
		if r := next(st, ev); r.act == actMove && r.to == to {
			from = append(from, st)
		}
	}
	return from
}

// noticeEvent is the event of an applynotify staus or a queryurl status.
func noticeEvent(state string) event {
	switch state {
	case wire.NotifyFailed:
		return evFailed
	case wire.NotifyIssued:
		return evIssued
	}
	return evProcessing
}
