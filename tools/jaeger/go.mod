module otpstepservice/tools/jaeger

go 1.26
