package exampleapp

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned when no row has the requested id; it is answered
// with 404.
var ErrNotFound = errors.New("not found")

// FieldError is an invalid request value; it is answered with 400 and the
// field's name.
type FieldError struct {
	// Field is the JSON field or query parameter at fault.
	Field string
	// Message says what is wrong and what is expected.
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// ConflictError is a request that clashes with stored data (a duplicate
// unique value, a row still referenced elsewhere); it is answered with 409.
type ConflictError struct {
	// Field is the JSON field at fault, or "" when none applies.
	Field string
	// Message says what clashes.
	Message string
}

func (e *ConflictError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// invalid returns a FieldError with a formatted message.
func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}
