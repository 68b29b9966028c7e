module github.com/redlock-go/redlock

go 1.22

require (
	github.com/FZambia/sentinel v1.1.1 // indirect
	github.com/gomodule/redigo v1.9.3 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.uber.org/goleak v1.3.0 // indirect
)
