module amime.dev/amime

go 1.26
