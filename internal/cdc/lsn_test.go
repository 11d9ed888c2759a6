package cdc

import "testing"

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "16/B374D848", want: 0x16B374D848},
		{in: "ffffffff/ffffffff", want: 0xFFFFFFFFFFFFFFFF},
		{in: "", wantErr: true},
		{in: "16", wantErr: true},
		{in: "/1", wantErr: true},
		{in: "1/", wantErr: true},
		{in: "g/1", wantErr: true},
		{in: "100000000/0", wantErr: true},
		{in: "-1/0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseLSN(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want %s", err, tc.want)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLSNString(t *testing.T) {
	tests := []struct {
		in   LSN
		want string
	}{
		{0, "0/0"},
		{0x16B374D848, "16/B374D848"},
		{0x1_00000000, "1/0"},
	}
	for _, tc := range tests {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("LSN(%#x).String(): got %s, want %s", uint64(tc.in), got, tc.want)
		}
		if back, err := ParseLSN(tc.want); err != nil || back != tc.in {
			t.Errorf("ParseLSN(%s): got %s, %v, want %s", tc.want, back, err, tc.in)
		}
	}
}
