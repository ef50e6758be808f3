"""Money: each job's reservation against its client's monthly budget, its settlement, and the
usage figures built from the jobs."""
