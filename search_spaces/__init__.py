"""Search spaces: one module or package per space, holding its family's genome, rules, sampler, cost and parts."""
