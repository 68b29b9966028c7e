package redlock

//go:generate go run ./gen
