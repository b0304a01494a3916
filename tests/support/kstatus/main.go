// Command kstatus prints what Flux (and anything else built on kstatus) reads
// from objects: for each JSON object on standard input (one a line), one line
// {"name": ..., "status": ..., "message": ...} computed by the real
// sigs.k8s.io/cli-utils/pkg/kstatus/status library.
//
// The test suite builds it with .ci/control-plane and feeds it policies read
// from a real API server (tests/control_plane.rs).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 0, 1<<20), 64<<20)
	encoder := json.NewEncoder(os.Stdout)
	for lines.Scan() {
		if len(lines.Bytes()) == 0 {
			continue
		}
		// Decoded as the API machinery decodes objects: integers stay int64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(lines.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: invalid object on standard input: %v\n", err)
			os.Exit(2)
		}
		computed, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", u.GetName(), err)
			os.Exit(1)
		}
		if err := encoder.Encode(result{u.GetName(), string(computed.Status), computed.Message}); err != nil {
			os.Exit(1)
		}
	}
	if err := lines.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading standard input: %v\n", err)
		os.Exit(2)
	}
}
