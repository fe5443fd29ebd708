from spinimpute.cli import main

main()
