from evalbench.cli import main

main()
