from semfuse_rt.engine.cli import main

main()
