from enchufe.cli import main

main()
