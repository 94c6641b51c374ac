from evalbench.report.cli import main

main()
