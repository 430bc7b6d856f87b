<#
.SYNOPSIS
Build the Windows installer of ShortGPT Desktop: the onedir bundle (PyInstaller) and an Inno Setup installer.

.DESCRIPTION
Outputs:
  dist\<flavour>\shortgpt-desktop\                                      the onedir bundle (both .exe files)
  dist\installers\shortgpt-desktop-<version>-windows-x64-<flavour>-setup.exe  (+ -setup-N.bin slices)

Steps: a build venv (build\venv-<flavour>) with the chosen torch first, then the project itself (not editable)
with its `build` extra (PyInstaller); the self-test with the spec's excludes blocked; PyInstaller; the smoke
test of the frozen programs; ISCC (Inno Setup 6: `choco install innosetup`, or set $env:ISCC).

.PARAMETER Flavour
cpu (default; PyPI's Windows torch is the CPU build) or cuda (torch from the PyTorch CUDA index).

.PARAMETER TorchIndexUrl
Where torch comes from; default: PyPI for cpu, https://download.pytorch.org/whl/cu128 for cuda.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File packaging\build_windows.ps1 -Flavour cuda
#>
param(
    [ValidateSet('cpu', 'cuda')]
    [string]$Flavour = $(if ($env:FLAVOUR) { $env:FLAVOUR } else { 'cpu' }),
    [string]$TorchVersion = $(if ($env:TORCH_VERSION) { $env:TORCH_VERSION } else { '2.13.0' }),
    [string]$TorchIndexUrl = $env:TORCH_INDEX_URL,
    [string]$Python = $(if ($env:PYTHON) { $env:PYTHON } else { 'python' }),
    [switch]$ReuseVenv,
    [switch]$SkipSmoke,
    [switch]$SkipInstaller
)

$ErrorActionPreference = 'Stop'
$started = Get-Date

function Invoke-Checked {
    # Run a program with the remaining arguments; stop on a non-zero exit status (Windows PowerShell 5 does not).
    $program = $args[0]
    $rest = @($args | Select-Object -Skip 1)
    & $program @rest
    if ($LASTEXITCODE -ne 0) { throw "$program $($rest -join ' ') exited with $LASTEXITCODE" }
}

function Write-Stage([string]$Text) {
    $seconds = [int]((Get-Date) - $started).TotalSeconds
    Write-Host ""
    Write-Host "=== [$seconds s] $Text"
}

$Repo = Split-Path -Parent $PSScriptRoot
Set-Location $Repo
Remove-Item Env:PYTHONPATH -ErrorAction SilentlyContinue

if (-not $PSBoundParameters.ContainsKey('TorchIndexUrl') -and -not $env:TORCH_INDEX_URL) {
    $TorchIndexUrl = if ($Flavour -eq 'cuda') { 'https://download.pytorch.org/whl/cu128' } else { '' }
}

$App = 'shortgpt-desktop'                      # = APP_NAME in packaging\shortgpt-desktop.spec
$Spec = 'packaging\shortgpt-desktop.spec'
$Venv = "build\venv-$Flavour"
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$DistDir = "dist\$Flavour"
$Bundle = Join-Path $DistDir $App
$Version = (& $Python packaging\speclib.py version).Trim()
if ($LASTEXITCODE -ne 0 -or -not $Version) { throw "cannot read the version" }

if ($ReuseVenv -and (Test-Path $VenvPython)) {
    Write-Stage "reusing $Venv"
} else {
    Write-Stage "build venv $Venv ($Flavour, torch $TorchVersion $TorchIndexUrl)"
    if (Test-Path $Venv) { Remove-Item -Recurse -Force $Venv }
    Invoke-Checked $Python -m venv $Venv
    Invoke-Checked $VenvPython -m pip install --quiet --upgrade pip
    if ($TorchIndexUrl) {
        Invoke-Checked $VenvPython -m pip install --quiet "torch==$TorchVersion" --index-url $TorchIndexUrl
    } else {
        Invoke-Checked $VenvPython -m pip install --quiet "torch==$TorchVersion"
    }
}
# setuptools builds the wheel in the checkout's build\lib and never empties it: a module deleted since the last
# build would be installed, and bundled, again
Remove-Item -Recurse -Force build\lib, build\bdist.* -ErrorAction SilentlyContinue
Invoke-Checked $VenvPython -m pip install --quiet ".[build]"
Invoke-Checked $VenvPython packaging\check_torch_flavour.py $Flavour

Write-Stage "self-test with the spec's excludes blocked (before the long build)"
$env:QT_QPA_PLATFORM = 'offscreen'
Invoke-Checked $VenvPython packaging\check_excludes.py

Write-Stage "PyInstaller: $Spec -> $Bundle"
if (Test-Path $Bundle) { Remove-Item -Recurse -Force $Bundle }
Invoke-Checked (Join-Path $Venv 'Scripts\pyinstaller.exe') --noconfirm --clean --log-level WARN `
    --distpath $DistDir --workpath "build\pyinstaller-$Flavour" $Spec

if (-not $SkipSmoke) {
    Write-Stage "smoke test of the frozen programs"
    Invoke-Checked $VenvPython packaging\smoke_test.py $Bundle
}

if (-not $SkipInstaller) {
    Write-Stage "Inno Setup installer"
    $Iscc = $env:ISCC
    if (-not $Iscc) {
        $found = Get-Command iscc.exe -ErrorAction SilentlyContinue
        if ($found) { $Iscc = $found.Source }
    }
    if (-not $Iscc) {
        foreach ($dir in @(${env:ProgramFiles(x86)}, $env:ProgramFiles, "$env:LOCALAPPDATA\Programs")) {
            if ($dir -and (Test-Path "$dir\Inno Setup 6\ISCC.exe")) { $Iscc = "$dir\Inno Setup 6\ISCC.exe"; break }
        }
    }
    if (-not $Iscc) { throw "ISCC.exe (Inno Setup 6) not found: choco install innosetup, or set `$env:ISCC" }
    New-Item -ItemType Directory -Force -Path 'dist\installers' | Out-Null
    Invoke-Checked $Iscc /Q "/DAppVersion=$Version" "/DFlavour=$Flavour" packaging\windows\shortgpt-desktop.iss
    Get-ChildItem "dist\installers\$App-$Version-windows-x64-$Flavour-setup*" | Format-Table Name, Length
}

$size = (Get-ChildItem -Recurse -File $Bundle | Measure-Object -Sum Length).Sum
Write-Stage ("done: bundle {0:N0} MB" -f ($size / 1MB))
