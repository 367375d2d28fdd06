from bench.run import run

run()
