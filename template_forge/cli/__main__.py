from template_forge.cli import main

main()
