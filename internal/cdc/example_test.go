package cdc_test

import (
	"fmt"

	"github.com/strangler-fig/strangler/internal/cdc"
)

func ExampleParseLSN() {
	lsn, err := cdc.ParseLSN("16/B374D848")
	if err != nil {
		panic(err)
	}
	fmt.Println(uint64(lsn), lsn)
	// Output: 97500059720 16/B374D848
}

func ExampleDecode() {
	// An Insert into relation 16391 of the row (1, NULL), as pgoutput
	// sends it.
	data := []byte{'I', 0, 0, 0x40, 0x07, 'N', 0, 2, 't', 0, 0, 0, 1, '1', 'n'}
	msg, err := cdc.Decode(data)
	if err != nil {
		panic(err)
	}
	ins := msg.(*cdc.Insert)
	fmt.Println(ins.RelationID, string(ins.New[0].Data), ins.New[1].Kind == cdc.ValueNull)
	// Output: 16391 1 true
}
