from mastctl.entry import run

run()
