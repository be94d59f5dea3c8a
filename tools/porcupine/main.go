// Command porcupine-check reads a history in Shoal's JSON Lines format and checks it with
// Porcupine, printing {"verdict", "parse_s", "check_s"} as JSON. An optional second
// argument is a time limit in seconds, after which the verdict is "undecided".
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"
)

type line struct {
	Process int             `json:"process"`
	Type    string          `json:"type"`
	F       string          `json:"f"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
}

// A register holds the canonical JSON of its value; absent is the empty string.
type input struct{ f, key, arg, expected string }
type output struct {
	value   string
	unknown bool
}

func canon(raw json.RawMessage) string {
	var v interface{}
	if err := json.Unmarshal(raw, &v); err != nil || v == nil {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func step(state, in, out interface{}) (bool, interface{}) {
	s, i, o := state.(string), in.(input), out.(output)
	switch i.f {
	case "read":
		return o.unknown || o.value == s, s
	case "write":
		return true, i.arg
	default: // cas: an ok one found expected; an unknown one may have failed
		if s == i.expected {
			return true, i.arg
		}
		return o.unknown, s
	}
}

func main() {
	start := time.Now()
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var events []porcupine.Event
	open := map[int]int{} // process -> id of its outstanding call
	inputs := map[int]input{}
	id := 0
	for sc.Scan() {
		var l line
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		switch l.Type {
		case "invoke":
			in := input{f: l.F, key: l.Key}
			if l.F == "cas" {
				var pair []json.RawMessage
				_ = json.Unmarshal(l.Value, &pair)
				in.expected, in.arg = canon(pair[0]), canon(pair[1])
			} else if l.F == "write" {
				in.arg = canon(l.Value)
			}
			open[l.Process], inputs[id] = id, in
			events = append(events, porcupine.Event{ClientId: l.Process, Kind: porcupine.CallEvent, Value: in, Id: id})
			id++
		case "ok":
			c := open[l.Process]
			delete(open, l.Process)
			events = append(events, porcupine.Event{ClientId: l.Process, Kind: porcupine.ReturnEvent, Value: output{value: canon(l.Value)}, Id: c})
		case "fail": // certainly had no effect: drop its call
			c := open[l.Process]
			delete(open, l.Process)
			for j := len(events) - 1; j >= 0; j-- {
				if events[j].Id == c {
					events = append(events[:j], events[j+1:]...)
					break
				}
			}
		case "info": // may take effect at any time after its call, or never: returns at the end
		}
	}
	for p, c := range open {
		events = append(events, porcupine.Event{ClientId: p, Kind: porcupine.ReturnEvent, Value: output{unknown: true}, Id: c})
	}
	parsed := time.Now()
	model := porcupine.Model{
		PartitionEvent: func(h []porcupine.Event) [][]porcupine.Event {
			byKey := map[string][]porcupine.Event{}
			var keys []string
			for _, e := range h {
				k := inputs[e.Id].key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], e)
			}
			out := make([][]porcupine.Event, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() interface{} { return "" },
		Step: step,
	}
	timeout := time.Duration(0)
	if len(os.Args) > 2 {
		seconds, err := strconv.ParseFloat(os.Args[2], 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "the second argument is a timeout in seconds:", err)
			os.Exit(3)
		}
		timeout = time.Duration(seconds * float64(time.Second))
	}
	res := porcupine.CheckEventsTimeout(model, events, timeout)
	done := time.Now()
	verdict := map[porcupine.CheckResult]string{porcupine.Ok: "linearizable",
		porcupine.Illegal: "not linearizable", porcupine.Unknown: "undecided"}[res]
	fmt.Printf("{\"verdict\": %q, \"parse_s\": %.4f, \"check_s\": %.4f}\n", verdict,
		parsed.Sub(start).Seconds(), done.Sub(parsed).Seconds())
}
