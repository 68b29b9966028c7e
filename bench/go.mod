module github.com/redlock-go/redlock/bench

go 1.26.0

replace github.com/redlock-go/redlock => ../

require (
	github.com/go-redsync/redsync/v4 v4.18.1
	github.com/gomodule/redigo v1.9.3
	github.com/redlock-go/redlock v0.0.0-00010101000000-000000000000
)

require github.com/FZambia/sentinel v1.1.1 // indirect
