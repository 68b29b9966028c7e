module github.com/redlock-go/redlock/cmd/redlock

go 1.22

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/gomodule/redigo v1.9.3
	github.com/redlock-go/redlock v0.0.0
)

require (
	github.com/FZambia/sentinel v1.1.1 // indirect
	github.com/yuin/gopher-lua v1.1.1 // indirect
)

replace github.com/redlock-go/redlock => ../../
