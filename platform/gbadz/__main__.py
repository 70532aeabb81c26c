from gbadz.cli import main

main()
