package fleet_test

import (
	"os"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
